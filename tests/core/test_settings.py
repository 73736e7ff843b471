from pathlib import Path

from voicefinetune.settings import Settings, env_table


def test_original_service_defaults():
    settings = Settings.from_env({})
    assert settings.device == "cuda:0"
    assert settings.use_flash_attn is True
    assert settings.gpu_idle_timeout == 300
    assert settings.gpu_max_concurrency == 16
    assert settings.gpu_max_models == 4
    assert settings.s3_access_key is None and settings.s3_secret_key is None
    assert settings.s3_bucket == "qwen3-tts"
    assert settings.s3_endpoint_url == "https://objectstore.e2enetworks.net"
    assert settings.storage_configured is False


def test_environment_overrides_and_parsing():
    settings = Settings.from_env(
        {
            "USE_FLASH_ATTN": "0",
            "GPU_MAX_MODELS": "2",
            "E2E_ACCESS_KEY": "a",
            "E2E_SECRET_KEY": "b",
            "VFT_DATA_DIR": "/tmp/x",
            "VFT_TINY_MODELS": "1",
        }
    )
    assert settings.use_flash_attn is False
    assert settings.gpu_max_models == 2
    assert settings.storage_configured is True
    assert settings.jobs_dir == Path("/tmp/x/jobs")
    assert settings.job_dir("abc") == Path("/tmp/x/jobs/abc")
    assert settings.tiny_models is True


def test_every_variable_of_the_original_service_is_read():
    names = {name for name, _ in env_table()}
    original = {
        "DEVICE",
        "USE_FLASH_ATTN",
        "GPU_IDLE_TIMEOUT",
        "GPU_MAX_CONCURRENCY",
        "GPU_MAX_MODELS",
        "E2E_ACCESS_KEY",
        "E2E_SECRET_KEY",
        "E2E_BUCKET",
        "E2E_ENDPOINT_URL",
    }
    assert original <= names
    assert {"VFT_DATA_DIR", "VFT_BASE_MODEL", "VFT_VOICE_DESIGN_MODEL", "VFT_TINY_MODELS"} <= names
