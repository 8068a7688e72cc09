"""Where inference records go: one module per external system, each a `Sink` (see `base`).

`stdout` (JSON lines, the default), `cloudevents` (KServe's logger format over HTTP), `table` (Parquet files on
S3-compatible storage or a local directory).
"""
