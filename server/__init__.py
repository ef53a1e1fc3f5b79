"""HTTP + websocket server and the command line. No SVD knowledge."""
