"""Recipient tokens: round trip, forgery, key rotation (mailer/tokens.py)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.config import Secret, Settings
from mailer.enums import Category
from mailer.errors import TokenError
from mailer.tokens import PreparedHmac, RecipientToken, TokenSigner

ids = st.integers(min_value=0, max_value=2**63 - 1)


def _signer(key: str = "key-one-0123456789", old: tuple[str, ...] = ()) -> TokenSigner:
    return TokenSigner(
        Settings(secret_key=Secret(key), old_secret_keys=tuple(Secret(k) for k in old))
    )


@given(contact_id=ids, category=st.sampled_from(list(Category)), send_id=ids)
def test_a_token_reads_back_as_the_contact_category_and_send_it_was_made_for(
    contact_id: int, category: Category, send_id: int
) -> None:
    signer = _signer()
    token = signer.make(contact_id, category, send_id)
    assert signer.read(token) == RecipientToken(contact_id, category, send_id)


@given(contact_id=ids, send_id=ids)
def test_a_token_is_url_safe_and_opaque(contact_id: int, send_id: int) -> None:
    token = _signer().make(contact_id, Category.PROMOTIONS, send_id)
    assert all(c.isalnum() or c in "-_." for c in token)
    assert "promotions" not in token


@given(position=st.integers(min_value=0), replacement=st.sampled_from("AbZ09-_"))
def test_any_altered_character_makes_the_token_invalid(position: int, replacement: str) -> None:
    signer = _signer()
    token = signer.make(42, Category.FEATURES, 7)
    i = position % len(token)
    forged = token[:i] + replacement + token[i + 1 :]
    if forged == token:
        return
    with pytest.raises(TokenError):
        signer.read(forged)


def test_a_token_signed_with_another_key_is_refused() -> None:
    forged = _signer("attacker-key-9876543210").make(1, Category.PROMOTIONS, 1)
    with pytest.raises(TokenError):
        _signer().read(forged)


def test_a_payload_pointing_at_another_contact_cannot_reuse_a_signature() -> None:
    signer = _signer()
    token = signer.make(1, Category.PROMOTIONS, 1)
    other_payload = signer.make(2, Category.PROMOTIONS, 1).split(".")[0]
    with pytest.raises(TokenError):
        signer.read(other_payload + "." + token.split(".")[1])


@pytest.mark.parametrize("garbage", ["", ".", "abc", "a.b", "W10.x", "💥"])
def test_garbage_is_refused_with_token_error(garbage: str) -> None:
    with pytest.raises(TokenError):
        _signer().read(garbage)


def test_tokens_from_the_previous_key_still_work_after_rotation() -> None:
    # Given a token sent under the old key
    old_token = _signer("old-key-0123456789").make(5, Category.SERVICE, 9)
    # When the key rotates and the old one is kept in MAILER_OLD_SECRET_KEYS
    rotated = _signer("new-key-0123456789", old=("old-key-0123456789",))
    # Then the old link still works, and new links are signed with the new key only
    assert rotated.read(old_token) == RecipientToken(5, Category.SERVICE, 9)
    new_token = rotated.make(5, Category.SERVICE, 9)
    assert _signer("new-key-0123456789").read(new_token).contact_id == 5
    with pytest.raises(TokenError):
        _signer("old-key-0123456789").read(new_token)


def test_a_key_dropped_from_the_rotation_list_no_longer_verifies() -> None:
    old_token = _signer("old-key-0123456789").make(5, Category.SERVICE, 9)
    with pytest.raises(TokenError):
        _signer("new-key-0123456789").read(old_token)


def test_tokens_never_expire() -> None:
    # No timestamp in the payload: the same token reads back whenever it is used.
    signer = _signer()
    token = signer.make(3, Category.PROMOTIONS, 4)
    assert signer.make(3, Category.PROMOTIONS, 4) == token


@given(key=st.binary(max_size=200), prefix=st.binary(max_size=80), data=st.binary(max_size=300))
def test_a_prepared_hmac_is_hmac_sha256_of_the_prefix_and_the_data(
    key: bytes, prefix: bytes, data: bytes
) -> None:
    # keys shorter than, equal to and longer than SHA-256's 64-byte block (hashed first)
    expected = hmac.new(key, prefix + data, hashlib.sha256)
    prepared = PreparedHmac(key, prefix)
    assert prepared.digest(data) == expected.digest()
    assert prepared.hexdigest(data) == expected.hexdigest()
    assert prepared.digest(data) == expected.digest()  # the prepared state is left as it was


def test_tokens_keep_the_exact_form_links_already_sent_carry() -> None:
    # Known answers: links and VERP addresses in mail already sent must keep verifying.
    signer = _signer()
    assert signer.make(42, Category.PROMOTIONS, 1001) == "NDI6MToxMDAx.1vEbn1HCmZLVixuRG315mA"
    assert signer.make(42, "policy") == "NDI6Mzow.IBmR1mqQcd7RqxO9Dn35WQ"
    assert signer.make_bounce(1001) == "3e9-dd36bcadbc3d0929180f"
    assert signer.read_bounce("3E9-DD36BCADBC3D0929180F") == 1001


def test_an_unknown_category_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="newsletters"):
        _signer().make(1, "newsletters", 1)
