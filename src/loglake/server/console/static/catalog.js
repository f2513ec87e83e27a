// The catalog page (being built).
import {el} from "./api.js";

export async function mount(root) {
  root.append(el("p", {class: "muted"}, "This page is being built."));
}
