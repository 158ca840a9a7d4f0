from django.urls import include, path, re_path
from oauth2_provider.urls import base_urlpatterns

from tests.peers.oauth.views import dicomweb, stats

urlpatterns = [
    path("o/", include((base_urlpatterns, "oauth2_provider"))),
    path("stats", stats),
    re_path(r"^dicom-web/(?P<rest>.*)$", dicomweb),
]
