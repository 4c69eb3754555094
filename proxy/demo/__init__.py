"""`oversight demo`: an embedded PostgreSQL, a synthetic data set, the example rules, the proxy."""
