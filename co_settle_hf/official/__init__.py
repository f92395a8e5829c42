"""The authors' released models: safe reading (`reading`), conversion to transformers (`layouts`),
the eight published models (`published`) and their import as adapters (`importing`)."""
