"""The playground: a local web page that behaves like a thread, and every session's gallery."""
