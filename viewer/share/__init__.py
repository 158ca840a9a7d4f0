"""Passing studies on (no Qt): de-identified export, media, pictures and movies, sending to a PACS."""
