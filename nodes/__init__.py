"""vidgraph's built-in node pack."""
