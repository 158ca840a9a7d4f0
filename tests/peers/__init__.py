"""Real peers the PACS tests start beside the viewer: an OAuth 2.0 authorization server with a bearer-protected
DICOMweb resource (oauth/), and a private Secret Service (keyring.py)."""
