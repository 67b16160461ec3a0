"""Finding H-neurons: collect answers, find answer spans, measure CETT, fit the probe; identify runs all."""
