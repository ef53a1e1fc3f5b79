import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const fixture = (name) => readFileSync(fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url)));
export const fixtureJson = (name) => JSON.parse(fixture(name).toString("utf8"));
export const defs = () => fixtureJson("object_info.json");
