"""Django settings of the test authorization server (django-oauth-toolkit).  Test-only: everything it needs
comes from the environment its parent (tests.peers.oauth.OAuthServer) sets."""

import os

WORK_DIR = os.environ["MIFAS_OAUTH_DIR"]
ORTHANC_DICOMWEB = os.environ["MIFAS_OAUTH_UPSTREAM"]  # Orthanc's DICOMweb root, which the resource forwards to
SECRET_KEY = "mifas-test-authorization-server-only"  # signs nothing a test relies on
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "oauth2_provider"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "tests.peers.oauth.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.join(WORK_DIR, "db.sqlite3")}}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Client secrets are hashed with this (the default PBKDF2 costs about 0.3 s per token request).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
OAUTH2_PROVIDER = {
    "ACCESS_TOKEN_EXPIRE_SECONDS": int(os.environ.get("MIFAS_OAUTH_TOKEN_S", "300")),
    "SCOPES": {"dicomweb": "read studies over DICOMweb"},
    "DEFAULT_SCOPES": ["dicomweb"],
    "DEVICE_FLOW_INTERVAL": 1,
    # Where the person goes to enter the code; never opened in the tests (tests.peers.oauth.views.approve).
    "OAUTH_DEVICE_VERIFICATION_URI": "https://sign-in.hospital.example/device",  # seconds between a device's polls (RFC 8628 3.2); the default 5 slows the tests
}
LOGGING = {"version": 1, "disable_existing_loggers": False,
           "handlers": {"stderr": {"class": "logging.StreamHandler"}},
           "root": {"handlers": ["stderr"], "level": "WARNING"}}
