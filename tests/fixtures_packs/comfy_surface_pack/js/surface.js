import { app } from "../../scripts/app.js"; app.registerExtension({ name: "surface.pack" });
