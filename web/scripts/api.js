// For extensions written the ComfyUI way (`import { api } from "../../scripts/api.js"`).
export const api = globalThis.vidgraph?.api;
export default api;
