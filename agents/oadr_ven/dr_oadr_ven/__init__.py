"""dr.oadr.<venId>: the OpenADR VEN agent (OpenADR 3.1 and 2.0b links) in front of dr.ven.<venId>."""
