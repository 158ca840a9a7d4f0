"""Run the test authorization server: ``python -m tests.peers.oauth.serve`` with MIFAS_OAUTH_DIR and
MIFAS_OAUTH_UPSTREAM set and a JSON object on stdin: {"clients": {name: [client_id, secret]},
"static_tokens": {name of client: token}, "device_clients": {name: client_id}} (public clients of the device
authorization grant, RFC 8628; a user "radiologist" approves their codes through tests.peers.oauth.views.approve).  Creates the database and the clients, binds a free loopback port,
prints it as one line ``PORT <n>`` and serves until terminated."""

import json
import os
import sys
from datetime import timedelta


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.peers.oauth.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application
    from django.utils import timezone
    from oauth2_provider.models import AccessToken, Application

    config = json.loads(sys.stdin.read())
    call_command("migrate", verbosity=0, interactive=False)
    apps = {}
    for name, (client_id, secret) in config["clients"].items():
        apps[name] = Application.objects.create(
            name=name, client_id=client_id, client_secret=secret, client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS)
    for name, client_id in config.get("device_clients", {}).items():
        Application.objects.create(name=name, client_id=client_id, client_type=Application.CLIENT_PUBLIC,
                                   authorization_grant_type=Application.GRANT_DEVICE_CODE)
    if config.get("device_clients"):
        from django.contrib.auth import get_user_model

        get_user_model().objects.create_user("radiologist")
    for name, token in config.get("static_tokens", {}).items():
        AccessToken.objects.create(token=token, application=apps[name], scope="dicomweb",
                                   expires=timezone.now() + timedelta(days=1))
    server = ThreadedWSGIServer(("127.0.0.1", 0), WSGIRequestHandler)
    server.set_app(get_wsgi_application())
    sys.stdout.write(f"PORT {server.server_address[1]}\n")
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
