"""The bearer-protected resource: DICOMweb GETs are forwarded to Orthanc once DOT has checked the access token.

Orthanc 1.10 checks HTTP Basic only (bearer tokens need its authorization plugin and a token service of its own),
so the resource server is this view, inside the authorization server, checking tokens against DOT's own database
the way a resource server would through introspection.  Tokens of an application whose name starts with
"blocked" are refused like invalid ones (an account the archive does not let in), and every refusal is a 401
with ``WWW-Authenticate: Bearer error="invalid_token"`` (RFC 6750 3.1; DOT's own decorators answer 403).
"""

import json
import threading

import requests
from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from oauth2_provider.oauth2_backends import get_oauthlib_core
from oauth2_provider.signals import app_authorized

_lock = threading.Lock()
COUNTS = {"tokens_issued": {}, "resource_requests": 0, "refused": 0}


def _issued(sender, request, token, **kwargs):
    with _lock:
        name = token.application.name if token.application else ""
        COUNTS["tokens_issued"][name] = COUNTS["tokens_issued"].get(name, 0) + 1


app_authorized.connect(_issued)


def stats(request):
    with _lock:
        return HttpResponse(json.dumps(COUNTS), content_type="application/json")


def dicomweb(request, rest):
    valid, oauth_request = get_oauthlib_core().verify_request(request, scopes=["dicomweb"])
    with _lock:
        COUNTS["resource_requests"] += 1
        refused = not valid or oauth_request.access_token.application.name.startswith("blocked")
        COUNTS["refused"] += refused
    if refused:
        response = HttpResponse(status=401)
        response["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return response
    query = request.META.get("QUERY_STRING", "")  # as sent: Orthanc does not decode percent-escapes
    upstream = requests.get(settings.ORTHANC_DICOMWEB + rest + (f"?{query}" if query else ""), stream=True,
                            headers={"Accept": request.headers.get("Accept", "*/*")}, timeout=30)
    response = StreamingHttpResponse(upstream.iter_content(1 << 16), status=upstream.status_code,
                                     content_type=upstream.headers.get("Content-Type"))
    return response


def approve(request):
    """Test only: what the person does in a browser at the verification address (sign in, enter the code, accept
    or deny), done directly: the grant of ``user_code`` is given to the user "radiologist" and accepted or
    denied (``decision``).  The server's own pages for it need a login page and forms a browser fills in; the
    viewer never sees them."""
    from django.contrib.auth import get_user_model
    from oauth2_provider.models import get_device_grant_model

    grant = get_device_grant_model().objects.filter(user_code=request.GET.get("user_code", "")).first()
    if grant is None:
        return HttpResponse(status=404)
    grant.user = get_user_model().objects.get(username="radiologist")
    grant.status = grant.AUTHORIZED if request.GET.get("decision") == "accept" else grant.DENIED
    grant.save(update_fields=["user", "status"])
    return HttpResponse("ok")
