"""/voice-design S3 outputs: one folder per voice description (its language and instruct), so two clients designing
different voices under the same file name never overwrite each other, and the same description finds its file."""

from __future__ import annotations

import hashlib


def design_folder(instruct: str, language: str) -> str:
    """The documented key: audio/design/{first 16 hex digits of SHA-256 of "{language}\\n{instruct}"}."""
    return "audio/design/" + hashlib.sha256(f"{language}\n{instruct}".encode()).hexdigest()[:16]


async def test_designs_of_different_descriptions_under_one_file_name_keep_their_own_objects(
    make_service, kit
):
    service = await make_service()
    designs = [("A warm male voice", "English"), ("A bright young female voice", "English")]
    designs.append(("A warm male voice", "German"))  # the same words in another language: another voice
    async with kit.http_client(service) as client:
        keys = []
        for instruct, language in designs:
            answer = await client.post(
                "/voice-design",
                json={
                    "text": "Welcome.",
                    "instruct": instruct,
                    "language": language,
                    "s3_filename": "intro.wav",
                },
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["kept_existing"] is False
            keys.append(answer.json()["s3_key"])
        assert keys == [f"{design_folder(instruct, language)}/intro.wav" for instruct, language in designs]
        assert all(service.storage.exists(key) for key in keys)

        again = await client.post(
            "/voice-design",
            json={
                "text": "Another text.",
                "instruct": "A warm male voice",
                "language": "english",  # the same language, spelt otherwise
                "s3_filename": "intro.wav",
                "overwrite": False,
            },
        )
    assert again.status_code == 200, again.text
    assert again.json()["s3_key"] == keys[0] and again.json()["kept_existing"] is True
