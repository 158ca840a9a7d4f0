from django.urls import include, path, re_path
from oauth2_provider.urls import base_urlpatterns

from tests.peers.oauth.views import approve, dicomweb, stats

urlpatterns = [
    path("o/", include((base_urlpatterns, "oauth2_provider"))),
    path("stats", stats),
    path("test/approve", approve),
    re_path(r"^dicom-web/(?P<rest>.*)$", dicomweb),
]
