"""OpenADR 3.1 VTN API of dr.web, served at /openadr3/3.1.0 (see web/README.md, "OpenADR 3.1")."""

BASE_PATH = "/openadr3/3.1.0"
