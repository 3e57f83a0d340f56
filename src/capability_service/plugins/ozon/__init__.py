"""The `ozon-download` plugin: a seller's Ozon catalogue as product lists, a streamed ZIP and job sources."""
