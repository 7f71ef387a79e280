"""`mailer serve`: the web app (public pages, the admin app, the API) under uvicorn."""

from __future__ import annotations

import click

from mailer.cli._common import runtime


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
def serve_command(host: str, port: int) -> None:
    """Serve the public pages, the admin app at /admin and the JSON API at /api/v1."""
    import uvicorn

    from mailer.web import create_app
    from mailer.web.server import uvicorn_config

    rt = runtime()  # refuses to start on a schema that needs `mailer db upgrade`
    app = create_app(runtime=rt)
    click.echo(
        f"serving {rt.settings.public_base_url} on http://{host}:{port} "
        f"(admin: /admin, API: /api/v1, OpenAPI: /api/v1/openapi.json)"
    )
    uvicorn.Server(uvicorn_config(app, rt.settings, host=host, port=port)).run()


@click.command("inbound")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=2526, show_default=True, type=int)
def inbound_command(host: str, port: int) -> None:
    """Receive unsubscribe mail (List-Unsubscribe mailto) and bounce and complaint reports."""
    import time

    from mailer.inbound import InboundServer

    rt = runtime()
    server = InboundServer(rt, host=host, port=port).start()
    click.echo(f"taking mail for {rt.settings.unsubscribe_mailto} on {host}:{server.port}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


COMMANDS = [serve_command, inbound_command]
