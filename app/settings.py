"""All of the operator's configuration in one place.

Read from environment variables prefixed ``CIRCUITLAB_`` (nested with ``__``) and from an
optional YAML or JSON file named by ``CIRCUITLAB_CONFIG``. Environment wins over the file.
Example file::

    default_model: smollm2-135m-instruct
    models:
      - name: llama-8b-instruct
        source: hub
        hf_id: meta-llama/Llama-3.1-8B-Instruct
        device_map: auto
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    JsonConfigSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from analysis.analyze import CircuitLimits
from analysis.embedded import DEFAULT_EMBEDDED
from analysis.llm_describe import LLMEndpoint
from analysis.models import ModelRegistry, ModelSpec, embedded_specs
from analysis.predict import Limits
from app.access_settings import AccessSettings, binds_beyond_loopback
from app.body_limit import BodyLimits
from app.jobs.job_settings import JobSettings

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class ModelQueueLimits(BaseModel):
    """Bounded waiting for the model (``CIRCUITLAB_MODEL_QUEUE__*``): model work is
    serialised, so beyond these a request is told when to retry instead of waiting."""

    max_depth: int = Field(50, ge=1, description="Model requests running or waiting at "
                           "once; the next one is answered 429 with Retry-After.")
    max_wait_s: float = Field(60.0, gt=0, description="Longest a request waits for the "
                              "model before it is answered 503 with Retry-After.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CIRCUITLAB_", env_nested_delimiter="__",
                                      extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    cache_dir: Path = Field(PROJECT_ROOT / "models_cache",  # env: CIRCUITLAB_CACHE_DIR
                            description="Converted models and fine-tuned checkpoints.")
    data_dir: Path = Field(PROJECT_ROOT / "data", description="SQLite database and job logs.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<data_dir>/circuitlab.db. "
                          "PostgreSQL: postgresql+psycopg://user:pass@host/db")
    default_model: str = DEFAULT_EMBEDDED
    models: list[ModelSpec] = Field(default_factory=list,
                                    description="Models besides the embedded ones.")
    include_embedded: bool = Field(True, description="Register the embedded models "
                                   "(SmolLM2-135M-Instruct and Gemma-3-270M).")
    load_on_start: bool = Field(True, description="Load the default model in the lifespan.")
    llm_describer: LLMEndpoint | None = Field(
        None, description="An OpenAI-compatible endpoint for neuron descriptions (off "
                          "by default): CIRCUITLAB_LLM_DESCRIBER__URL, __MODEL.")
    index_on_start: bool = Field(
        True, description="Queue an exemplar index of the default model over the built-in "
                          "corpus at start, unless one exists (a first index takes about "
                          "ten minutes on two cores; pages use it while it grows).")
    max_resident_models: int = Field(
        2, ge=1, description="Full models kept in memory at once (base + a full fine-tune "
                             "for a comparison); LoRA variants do not count. Set 1 when two "
                             "copies do not fit: a comparison then swaps the variant in.")
    limits: Limits = Field(default_factory=Limits)
    body_limits: BodyLimits = Field(default_factory=BodyLimits)
    circuit_limits: CircuitLimits = Field(default_factory=CircuitLimits)
    jobs: JobSettings = Field(default_factory=JobSettings)
    model_queue: ModelQueueLimits = Field(default_factory=ModelQueueLimits)
    api_token: SecretStr | None = Field(
        None, description="Needed beyond localhost to write or compute (header "
                          "'Authorization: Bearer <token>', the /login session cookie, or "
                          "a form's token field). Never logged.")
    access: AccessSettings = Field(default_factory=AccessSettings)
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names the server answers to besides localhost, IP addresses and "
                    "CIRCUITLAB_HOST (comma-separated; '*.example.org' for subdomains, '*' "
                    "for any): other Host headers get 400, which stops DNS rebinding.")

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("api_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        # docker compose passes ${CIRCUITLAB_API_TOKEN:-} as "": that is no token, not a
        # token everyone knows.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    def needs_token(self) -> bool:
        """Whether writes and model work ask for the token (the pages show a token field
        or a sign-in link then)."""
        if not binds_beyond_loopback(self.host):
            return False
        return self.api_token is not None or not self.access.insecure_no_token

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The operator's YAML or JSON file named by CIRCUITLAB_CONFIG (pydantic-settings'
        # own sources); the environment wins over it.
        path = os.environ.get("CIRCUITLAB_CONFIG")
        if not path:
            return (init_settings, env_settings)
        if path.endswith((".yaml", ".yml")):
            file_source: PydanticBaseSettingsSource = YamlConfigSettingsSource(
                settings_cls, yaml_file=path)
        else:
            file_source = JsonConfigSettingsSource(settings_cls, json_file=path)
        return (init_settings, env_settings, file_source)

    @model_validator(mode="after")
    def _default_is_registered(self) -> Settings:
        names = [m.name for m in self.all_models()]
        if self.default_model not in names:
            raise ValueError(
                f"default_model {self.default_model!r} is not registered ({', '.join(names)})"
            )
        return self

    def all_models(self) -> list[ModelSpec]:
        return (embedded_specs() if self.include_embedded else []) + list(self.models)

    def db_url(self) -> str:
        from app.store.tables import default_url

        return self.database_url or default_url(self.data_dir)

    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.all_models())
