import errno

from voicefinetune.diskfull import DiskFull, is_disk_full


def test_a_full_disk_or_quota_is_recognised_through_the_exception_chain():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(DiskFull("the upload"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("writing a member failed") from exc
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)


def test_other_errors_are_not_a_full_disk():
    assert not is_disk_full(OSError(errno.EFBIG, "File too large"))
    assert not is_disk_full(OSError(errno.EIO, "Input/output error"))
    assert not is_disk_full(ValueError("bad zip"))
    assert not is_disk_full(None)
    assert str(DiskFull("the upload")) == (
        "the server's disk is full: the upload could not be written; free space on the server (or ask its "
        "administrator to), then try again"
    )
