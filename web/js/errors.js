// Error texts for people: the reason first, then where; the server's raw fields (ComfyUI's shapes)
// stay available as the "more" part. No DOM here.

// One validation error ({type, message, details, extra_info}) → {text, input, more}.
export function describeValidationError(err) {
  const input = err.extra_info?.input_name ?? null;
  const details = String(err.details ?? "");
  const more = [err.message, details].filter(Boolean).join(": ");
  switch (err.type) {
    case "custom_validation_failed": {
      // details is "name, name, … - reason": the node's own words are what matter
      const cut = details.indexOf(" - ");
      const reason = cut >= 0 ? details.slice(cut + 3) : "";
      return { text: reason || `${err.message}${input ? ` (${input})` : ""}`, input, more };
    }
    case "value_not_in_list": {
      const value = err.extra_info?.received_value ?? (details.match(/: '(.*)' not in/) ?? [])[1];
      return { text: `${input ?? "value"}: ${value === undefined ? "this value" : `'${value}'`} is not one of the choices here`, input, more };
    }
    case "exception_during_validation":
      return { text: details || err.message, input, more };
    default:
      // most details are just the input's name: "width: Value 5 smaller than min of 16"
      if (!details) return { text: err.message, input, more };
      return { text: details === input ? `${input}: ${err.message}` : `${err.message}: ${details}`, input, more };
  }
}

// A runtime `execution_error` → a one-line summary and the traceback apart.
export function describeRuntimeError(data) {
  const where = data.node_id == null ? "The prompt" : `${data.node_type ?? "Node"} #${data.node_id}`;
  const text = `${data.exception_type}: ${data.exception_message}`;
  return { where, text, traceback: (data.traceback ?? []).join("") };
}
