"""The subject ledger: who received or searched for whose records (DESIGN.md, "Audit log").

`hashing` turns a subject key or search value into the keyed hash the audit
log holds; `tally` collects one statement's hashes, capped, into its record's
`subjects` field.
"""
