"""A boundary set as represent-boundaries' "Add data to the API" docs describe one."""
from datetime import date

import boundaries

boundaries.register(
    "Corpus wards",
    domain="Corpusville",
    last_updated=date(2026, 12, 1),
    name_func=boundaries.attr("NAME"),
    id_func=boundaries.attr("WARD_ID"),
    slug_func=boundaries.attr("WARD_ID"),
    authority="The corpus harness",
    source_url="https://example.com/wards",
    licence_url="https://example.com/licence",
    encoding="utf-8",
    metadata={"geographic_code": "01"},
    file="wards.shp",
)
