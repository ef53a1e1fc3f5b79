// For extensions written the ComfyUI way (`import { app } from "../../scripts/app.js"`).
export const app = globalThis.vidgraph;
export default app;
