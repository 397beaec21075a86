"""Bearer tokens (fastpost.security.Tokens): one algorithm, checked clocks, ids in range,
and key rotation by `kid`."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from fastpost.errors import Unauthorized
from fastpost.ids import MAX_ID
from fastpost.security import Tokens, key_id
from tests.conftest import TEST_SECRET, Factory, make_settings
from tests.helpers import with_auth

OLD_KEY = "the-key-we-used-last-month-0123456789abcdef"
OLDER_KEY = "the-key-we-used-before-that-0123456789abcdef"


def _tokens(**auth: Any) -> Tokens:
    return Tokens(with_auth(make_settings("sqlite+aiosqlite://"), **auth))


def _sign(claims: dict[str, Any], key: str = TEST_SECRET, **options: Any) -> str:
    return jwt.encode(claims, key, **{"algorithm": "HS256", **options})


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "42", "iat": now, "exp": now + 600, **changes}


def _refused(tokens: Tokens, token: str) -> str:
    with pytest.raises(Unauthorized) as refused:
        tokens.user_id(token)
    return refused.value.code


def test_a_token_names_its_key_and_is_accepted() -> None:
    tokens = _tokens()
    token = tokens.issue(42).access_token
    assert jwt.get_unverified_header(token)["kid"] == key_id(TEST_SECRET)
    assert tokens.user_id(token) == 42


def test_the_kid_does_not_reveal_the_key() -> None:
    assert TEST_SECRET not in key_id(TEST_SECRET)
    assert key_id(TEST_SECRET) != key_id(OLD_KEY)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_a_token_signed_with_another_algorithm_is_refused(algorithm: str) -> None:
    assert _refused(_tokens(), _sign(_claims(), algorithm=algorithm)) == "invalid_token"


def test_an_unsigned_token_is_refused() -> None:
    unsigned = jwt.encode(_claims(), None, algorithm="none")
    assert _refused(_tokens(), unsigned) == "invalid_token"


@pytest.mark.parametrize("missing", ["exp", "iat", "sub"])
def test_a_token_without_exp_iat_or_sub_is_refused(missing: str) -> None:
    claims = _claims()
    del claims[missing]
    assert _refused(_tokens(), _sign(claims)) == "invalid_token"


def test_clocks_are_checked_with_a_small_leeway() -> None:
    tokens = _tokens(leeway_seconds=30)
    now = int(time.time())
    # Within the skew two hosts' clocks may have: accepted.
    assert tokens.user_id(_sign(_claims(exp=now - 10))) == 42
    assert tokens.user_id(_sign(_claims(iat=now + 10, nbf=now + 10))) == 42
    # Beyond it: refused.
    assert _refused(tokens, _sign(_claims(exp=now - 60))) == "token_expired"
    assert _refused(tokens, _sign(_claims(iat=now + 60))) == "invalid_token"
    assert _refused(tokens, _sign(_claims(nbf=now + 60))) == "invalid_token"


def test_a_token_already_checked_is_refused_once_it_expires() -> None:
    tokens = _tokens(leeway_seconds=0)
    expires = int(time.time()) + 1
    token = _sign(_claims(exp=expires))
    assert tokens.user_id(token) == 42
    assert tokens.user_id(token) == 42  # from the table of checked tokens
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    assert _refused(tokens, token) == "token_expired"


def test_a_token_changed_by_one_character_is_checked_afresh() -> None:
    tokens = _tokens()
    token = _sign(_claims())
    assert tokens.user_id(token) == 42
    header, payload, signature = token.split(".")
    forged = ".".join([header, payload, signature[:-2] + ("A" if signature[-2] != "A" else "B")])
    forged += signature[-1]
    assert _refused(tokens, forged) == "invalid_token"
    other = ".".join([header, _b64({**_claims(), "sub": "43"}), signature])
    assert _refused(tokens, other) == "invalid_token"


def test_the_table_of_checked_tokens_stays_bounded() -> None:
    tokens = _tokens()
    now = int(time.time())
    signed = [_sign(_claims(sub=str(n), iat=now - n % 60)) for n in range(1, 5000)]
    for n, token in enumerate(signed, start=1):
        assert tokens.user_id(token) == n
    assert len(tokens._verified) <= 4096
    # The oldest were dropped, and are checked in full again: still valid.
    assert tokens.user_id(signed[0]) == 1


@pytest.mark.parametrize(
    "sub",
    [str(MAX_ID + 1), str(2**70), "0", "-1", "²", "\uff14\uff12", " 42", "42.0", 42, None, ["42"]],
)
def test_a_validly_signed_token_whose_sub_is_no_possible_id_is_refused(sub: Any) -> None:
    assert _refused(_tokens(), _sign(_claims(sub=sub))) == "invalid_token"


def test_the_largest_possible_id_is_accepted() -> None:
    assert _tokens().user_id(_sign(_claims(sub=str(MAX_ID)))) == MAX_ID


def _b64(segment: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(segment).encode()).rstrip(b"=").decode()


def _with_header(token: str, header: dict[str, Any]) -> str:
    """`token` with another header (PyJWT refuses to write a kid that is not a string)."""
    return ".".join([_b64(header), *token.split(".")[1:]])


@pytest.mark.parametrize("kid", ["unknown", ["a"], {"a": 1}, 7])
def test_a_token_naming_an_unknown_or_malformed_kid_is_refused(kid: Any) -> None:
    token = _with_header(_sign(_claims()), {"alg": "HS256", "typ": "JWT", "kid": kid})
    assert _refused(_tokens(), token) == "invalid_token"


def test_a_token_without_kid_is_checked_against_the_current_key() -> None:
    # Tokens issued before tokens carried a kid stay valid until they expire.
    assert _tokens().user_id(_sign(_claims())) == 42
    assert _refused(_tokens(), _sign(_claims(), key=OLD_KEY)) == "invalid_token"


def test_after_a_rotation_tokens_of_the_previous_keys_are_accepted_until_they_expire() -> None:
    before = _tokens(secret_key=OLD_KEY)
    old_token = before.issue(42).access_token
    older_token = _tokens(secret_key=OLDER_KEY).issue(43).access_token
    after = _tokens(previous_secret_keys=[OLD_KEY, OLDER_KEY])
    assert after.user_id(old_token) == 42
    assert after.user_id(older_token) == 43
    # New tokens are signed with the current key only.
    new_token = after.issue(44).access_token
    assert jwt.get_unverified_header(new_token)["kid"] == key_id(TEST_SECRET)
    # Expired is expired, whichever key signed it.
    old_kid = {"kid": key_id(OLD_KEY)}
    expired = _sign(_claims(exp=int(time.time()) - 120), key=OLD_KEY, headers=old_kid)
    assert _refused(after, expired) == "token_expired"
    # A key no longer listed signs nothing valid.
    assert _refused(_tokens(), old_token) == "invalid_token"


def test_a_previous_key_signs_nothing_new_after_the_rotation_time() -> None:
    rotated_at = datetime.now(UTC) - timedelta(minutes=5)
    after = _tokens(previous_secret_keys=[OLD_KEY], rotated_at=rotated_at)
    old_kid = {"kid": key_id(OLD_KEY)}
    issued_before = int((rotated_at - timedelta(minutes=1)).timestamp())
    before_rotation = _sign(_claims(iat=issued_before), key=OLD_KEY, headers=old_kid)
    assert after.user_id(before_rotation) == 42
    # Someone holding the old key mints a token now: refused.
    minted = _sign(_claims(), key=OLD_KEY, headers=old_kid)
    assert _refused(after, minted) == "invalid_token"


def test_production_refuses_a_weak_previous_key() -> None:
    from pydantic import ValidationError

    from fastpost.settings import AuthSettings, Settings

    with pytest.raises(ValidationError, match="PREVIOUS_SECRET_KEYS"):
        Settings(
            env="production",
            auth=AuthSettings(secret_key=TEST_SECRET, previous_secret_keys=["short"]),
        )


async def test_a_token_out_of_range_answers_401_on_both_apis_not_500(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    await factory.user()
    token = _sign(_claims(sub=str(2**70)))
    for method, path, scheme in [
        ("GET", "/users/me", "Bearer"),
        ("POST", "/posts/", "Bearer"),
        ("GET", "/feed", "Bearer"),
        ("GET", "/api/user", "Token"),
        ("POST", "/api/articles", "Token"),
        ("GET", "/api/articles", "Token"),
    ]:
        response = await client.request(
            method, path, headers={"Authorization": f"{scheme} {token}"}, json={}
        )
        assert response.status_code == 401, (method, path, response.text)
        body = response.json()
        assert ("errors" in body) == path.startswith("/api"), body
