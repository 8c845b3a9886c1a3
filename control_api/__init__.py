"""Activelead's control plane: accounts, projects, keys, credits, events, webhooks, ingest API."""

from control_api.settings import ControlApiSettings, load_settings

__all__ = ["ControlApiSettings", "create_app", "load_settings"]


def __getattr__(name: str) -> object:
    # create_app pulls in aiohttp and the scoring engine; importing the package for its settings
    # (the CLI's --help) should not pay for that.
    if name == "create_app":
        from control_api.app import create_app

        return create_app
    raise AttributeError(name)
