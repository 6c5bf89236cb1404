"""Raw datasets: dataset.json, case discovery (missing modalities allowed), image I/O, integrity checks."""
