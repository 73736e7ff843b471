import pytest
from pydantic import ValidationError

from voicefinetune.schemas import (
    FinetuneRequest,
    InvalidInput,
    check_filename,
    check_language,
    check_speaker_name,
    check_text,
)


def test_finetune_defaults_match_the_original_service():
    request = FinetuneRequest(dataset_s3_key="datasets/Hero1/dataset.zip")
    assert (request.speaker_name, request.num_epochs, request.batch_size, request.lr) == (
        "speaker_custom",
        15,
        2,
        1e-6,
    )
    assert request.book_id is request.chapter_id is request.character_id is request.resume_job_id is None


@pytest.mark.parametrize(
    "field,value",
    [
        ("num_epochs", 0),
        ("num_epochs", -1),
        ("batch_size", 0),
        ("lr", 0),
        ("lr", -1e-3),
        ("speaker_name", "Hero_1"),
    ],
)
def test_finetune_refuses_bad_values(field, value):
    with pytest.raises(ValidationError) as error:
        FinetuneRequest(dataset_s3_key="d.zip", **{field: value})
    assert field in str(error.value)


def test_speaker_name_message_explains_the_underscore_rule():
    with pytest.raises(InvalidInput, match="Hero1"):
        check_speaker_name("Hero_1")
    assert check_speaker_name("hero_voice") == "hero_voice"


def test_item_checks():
    assert check_language("english") == "English"
    with pytest.raises(InvalidInput, match="supported: .*English"):
        check_language("Klingon")
    with pytest.raises(InvalidInput, match="empty"):
        check_text("  ", 100)
    with pytest.raises(InvalidInput, match="limit is 5"):
        check_text("too long", 5)
    assert check_filename("ch1_001") == "ch1_001.wav"
    for bad in ["../../etc/passwd", "/etc/passwd", "a/b.wav", ".hidden.wav", "a..b.wav", "x\n.wav", ""]:
        with pytest.raises(InvalidInput, match="unsafe filename"):
            check_filename(bad)
