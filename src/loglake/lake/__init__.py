"""The Iceberg lake: catalog, table writer and the ingest ledger."""
