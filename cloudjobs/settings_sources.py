"""``Settings``: the settings model read by pydantic-settings (arguments, environment, ``.env``).

Kept apart from :mod:`cloudjobs.settings` because pydantic-settings loads asyncio, argparse and
python-dotenv: :func:`cloudjobs.settings.load_settings` needs this module only when a ``.env`` file
is there to read.
"""

from __future__ import annotations

from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from cloudjobs.settings import DOTENV_FILE, ENV_PREFIX, SettingsModel


class Settings(BaseSettings, SettingsModel):
    """Every cloudjobs setting, from keyword arguments, then ``CLOUDJOBS_*`` variables, then ``.env``.

    ``Settings(_env_file=None)`` leaves ``.env`` out.
    """

    # No JSON decoding of values: every setting is a scalar but `queues`, which parses its own
    # NAME=VALUE string.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=DOTENV_FILE,
        enable_decoding=False,
        extra="ignore",
        frozen=True,
        validate_default=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The usual sources in the usual order (arguments, environment, ``.env``, secrets), without
        the ``.env`` source when it read nothing (no file, or an empty one): it would add nothing, and
        it walks every field again."""
        if isinstance(dotenv_settings, DotEnvSettingsSource) and not dotenv_settings.env_vars:
            return init_settings, env_settings, file_secret_settings
        return init_settings, env_settings, dotenv_settings, file_secret_settings
