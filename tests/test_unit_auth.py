"""Unit tests of the authenticator (``collab/auth.py``): signed, expiring, revocable tokens and
per-document roles, on a real ``Store`` (SQLite) and real PyJWT tokens."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import jwt
import pytest
from agents_support import migrated_store

from collab import (
    Authenticator,
    AuthMode,
    Identity,
    InvalidToken,
    PermissionDenied,
    Role,
    Store,
    TinymorphError,
    TokenRevoked,
)

SECRET = "unit-test-secret-" + "x" * 32
DOC_ROLES = [Role.OWNER, Role.EDITOR, Role.VIEWER, Role.AGENT]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = migrated_store(tmp_path_factory.mktemp('auth') / 'auth.db')
    yield store
    store.close()


@pytest.fixture
def doc(store) -> str:
    return store.create_document("A", "alice")["id"]


@pytest.fixture
def other_doc(store) -> str:
    return store.create_document("B", "bob")["id"]


def make_auth(store: Store, mode: AuthMode | str = AuthMode.TOKENS, secret: str = SECRET) -> Authenticator:
    return Authenticator(store, secret, mode, 3600)


@pytest.fixture(params=[AuthMode.OPEN, AuthMode.TOKENS], ids=str)
def auth(request, store) -> Authenticator:
    return make_auth(store, request.param)


@pytest.fixture
def tokens_auth(store) -> Authenticator:
    return make_auth(store, AuthMode.TOKENS)


@pytest.fixture
def open_auth(store) -> Authenticator:
    return make_auth(store, AuthMode.OPEN)


# -- roles ------------------------------------------------------------------------------------


def test_role_write_permissions():
    assert {r for r in Role if r.can_write} == {Role.OWNER, Role.EDITOR, Role.AGENT}
    assert not Role.VIEWER.can_write  # reviewers read only
    assert not Role.USER.can_write  # an account token opens no document by itself


def test_auth_mode_is_parsed_and_checked(store):
    assert make_auth(store, "open").mode is AuthMode.OPEN
    assert make_auth(store, "tokens").mode is AuthMode.TOKENS
    with pytest.raises(ValueError):
        make_auth(store, "anyone")


def test_identity_kind_and_log_meta():
    human = Identity("u1", "Ann", Role.EDITOR, "d", "tok1")
    agent = Identity("editor", "Editor", Role.AGENT, "d", "tok2", {"run_id": "r1", "model": "m"})
    system = Identity("u1", "Ann", Role.EDITOR, "d", "tok1", system=True)
    assert (human.kind, agent.kind, system.kind) == ("human", "agent", "system")
    assert human.log_meta == {"token_id": "tok1"}
    assert agent.log_meta == {"run_id": "r1", "model": "m", "token_id": "tok2"}
    assert Identity("guest", "guest", Role.OWNER).log_meta == {}
    assert agent.meta == {"run_id": "r1", "model": "m"}  # the token's own meta is left alone


# -- issue / decode ----------------------------------------------------------------------------


@pytest.mark.parametrize("role", DOC_ROLES, ids=str)
def test_round_trip_for_each_document_role(auth, doc, role):
    token, token_id = auth.issue(user_id="u-" + role, name=f"Name {role}", role=role, doc_id=doc)
    ident = auth.decode(token)
    assert ident.user_id == "u-" + role
    assert ident.name == f"Name {role}"
    assert ident.role is role
    assert ident.doc_id == doc
    assert ident.token_id == token_id
    assert ident.role.can_write == (role is not Role.VIEWER)
    # the token is recorded in the tokens table under its jti
    row = auth.store.get_token(token_id)
    assert row["role"] == role and row["doc_id"] == doc and row["user_id"] == "u-" + role
    assert row["revoked_at"] is None
    # and the same token opens its document, keeping its role, in either mode
    assert auth.for_document(token, doc) == ident


def test_round_trip_for_a_user_token(auth):
    token, token_id = auth.issue(user_id="alice", name="Alice", role="user")
    ident = auth.decode(token)
    assert (ident.user_id, ident.name, ident.role, ident.doc_id, ident.token_id) == (
        "alice", "Alice", Role.USER, None, token_id)
    assert auth.for_account(token) == ident


def test_agent_token_carries_its_meta(tokens_auth, doc):
    meta = {"run_id": "r1", "model": "smol", "steering": [{"source": "caa:formal", "strength": 0.3}]}
    token, token_id = tokens_auth.issue(user_id="editor", name="Editor", role=Role.AGENT, doc_id=doc, meta=meta)
    ident = tokens_auth.for_document(token, doc)
    assert ident.kind == "agent"
    assert ident.meta == meta
    assert ident.log_meta == {**meta, "token_id": token_id}


def test_claims_are_the_documented_ones(tokens_auth, doc):
    before = datetime.now(timezone.utc)
    token, token_id = tokens_auth.issue(user_id="u1", name="Ann", role="editor", doc_id=doc, ttl_s=120)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "u1" and claims["name"] == "Ann" and claims["role"] == "editor"
    assert claims["doc"] == doc and claims["jti"] == token_id
    exp = datetime.fromtimestamp(claims["exp"], timezone.utc)
    assert before + timedelta(seconds=110) <= exp <= before + timedelta(seconds=130)
    # the default ttl applies when none is given
    token, _ = tokens_auth.issue(user_id="u1", name="Ann", role="editor", doc_id=doc)
    exp = datetime.fromtimestamp(jwt.decode(token, SECRET, algorithms=["HS256"])["exp"], timezone.utc)
    assert exp - before >= timedelta(seconds=3590)


@pytest.mark.parametrize("role", DOC_ROLES, ids=str)
def test_document_roles_need_a_document(tokens_auth, role):
    with pytest.raises(PermissionDenied):
        tokens_auth.issue(user_id="u", name="U", role=role)


def test_user_tokens_have_no_document(tokens_auth, doc):
    with pytest.raises(PermissionDenied):
        tokens_auth.issue(user_id="u", name="U", role=Role.USER, doc_id=doc)


def test_unknown_role_is_refused_at_issue(tokens_auth, doc):
    with pytest.raises(ValueError):
        tokens_auth.issue(user_id="u", name="U", role="admin", doc_id=doc)


# -- invalid tokens -----------------------------------------------------------------------------


def test_expired_token_is_invalid(auth, doc):
    token, _ = auth.issue(user_id="u", name="U", role="editor", doc_id=doc, ttl_s=-60)
    with pytest.raises(InvalidToken, match="expired"):
        auth.decode(token)
    with pytest.raises(InvalidToken):
        auth.for_document(token, doc)  # even on an open hub a bad token is refused, not ignored


def test_wrong_signature_is_invalid(store, doc):
    mine, theirs = make_auth(store), make_auth(store, secret="another-secret-" + "y" * 32)
    token, _ = theirs.issue(user_id="u", name="U", role="owner", doc_id=doc)
    with pytest.raises(InvalidToken):
        mine.decode(token)
    assert theirs.decode(token).role is Role.OWNER


def test_tampered_payload_is_invalid(tokens_auth, doc):
    token, _ = tokens_auth.issue(user_id="u", name="U", role="viewer", doc_id=doc)
    header, payload, sig = token.split(".")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    forged_payload = jwt.encode({**claims, "role": "owner"}, "whatever", algorithm="HS256").split(".")[1]
    with pytest.raises(InvalidToken):
        tokens_auth.decode(".".join([header, forged_payload, sig]))


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c", "Bearer x"])
def test_garbage_is_invalid(tokens_auth, garbage):
    with pytest.raises(InvalidToken):
        tokens_auth.decode(garbage)


def test_unsigned_token_is_invalid(tokens_auth, doc):
    _, token_id = tokens_auth.issue(user_id="u", name="U", role="owner", doc_id=doc)
    claims = {"sub": "u", "role": "owner", "doc": doc, "jti": token_id,
              "exp": datetime.now(timezone.utc) + timedelta(hours=1)}
    with pytest.raises(InvalidToken):
        tokens_auth.decode(jwt.encode(claims, None, algorithm="none"))


@pytest.mark.parametrize("missing", ["exp", "jti", "sub", "role"])
def test_token_missing_a_required_claim_is_invalid(tokens_auth, doc, missing):
    _, token_id = tokens_auth.issue(user_id="u", name="U", role="owner", doc_id=doc)
    claims = {"sub": "u", "role": "owner", "doc": doc, "jti": token_id,
              "exp": datetime.now(timezone.utc) + timedelta(hours=1)}
    del claims[missing]
    with pytest.raises(InvalidToken):
        tokens_auth.decode(jwt.encode(claims, SECRET, algorithm="HS256"))


def test_well_signed_token_with_unknown_role_is_invalid(tokens_auth, doc):
    _, token_id = tokens_auth.issue(user_id="u", name="U", role="owner", doc_id=doc)
    claims = {"sub": "u", "role": "superuser", "doc": doc, "jti": token_id,
              "exp": datetime.now(timezone.utc) + timedelta(hours=1)}
    with pytest.raises(InvalidToken):
        tokens_auth.decode(jwt.encode(claims, SECRET, algorithm="HS256"))


def test_well_signed_token_that_was_never_issued_is_invalid(tokens_auth, doc):
    """Signed with the right key but with no row in the tokens table (e.g. minted elsewhere)."""
    claims = {"sub": "u", "role": "owner", "doc": doc, "jti": uuid.uuid4().hex,
              "exp": datetime.now(timezone.utc) + timedelta(hours=1)}
    with pytest.raises(InvalidToken, match="unknown"):
        tokens_auth.decode(jwt.encode(claims, SECRET, algorithm="HS256"))


def test_revoked_token(auth, doc):
    token, token_id = auth.issue(user_id="u", name="U", role="editor", doc_id=doc)
    assert auth.decode(token).role is Role.EDITOR
    assert auth.store.revoke_token(token_id) is True
    assert auth.store.revoke_token(token_id) is False  # once only
    with pytest.raises(TokenRevoked):
        auth.decode(token)
    with pytest.raises(TokenRevoked):
        auth.for_document(token, doc)
    # revocation is per token: another one for the same person still works
    other, _ = auth.issue(user_id="u", name="U", role="editor", doc_id=doc)
    assert auth.for_document(other, doc).user_id == "u"


def test_revoked_user_token(tokens_auth):
    token, token_id = tokens_auth.issue(user_id="alice", name="Alice", role="user")
    tokens_auth.store.revoke_token(token_id)
    with pytest.raises(TokenRevoked):
        tokens_auth.for_account(token)


def test_errors_carry_their_close_codes_and_statuses():
    assert issubclass(InvalidToken, TinymorphError) and issubclass(TokenRevoked, TinymorphError)
    assert (InvalidToken.close_code, InvalidToken.http_status) == (4401, 401)
    assert (TokenRevoked.close_code, TokenRevoked.http_status) == (4410, 401)
    assert (PermissionDenied.close_code, PermissionDenied.http_status) == (4403, 403)


# -- documents --------------------------------------------------------------------------------


@pytest.mark.parametrize("role", DOC_ROLES, ids=str)
def test_token_for_one_document_does_not_open_another(auth, doc, other_doc, role):
    token, _ = auth.issue(user_id="u", name="U", role=role, doc_id=doc)
    with pytest.raises(PermissionDenied):
        auth.for_document(token, other_doc)
    assert auth.for_document(token, doc).doc_id == doc


def test_open_mode_without_a_token_is_a_guest_who_may_write(open_auth, doc):
    ident = open_auth.for_document(None, doc)
    assert ident.user_id == "guest" and ident.name == "guest"
    assert ident.doc_id == doc
    assert ident.role.can_write
    assert ident.role in (Role.OWNER, Role.EDITOR)  # README: "an editor named guest"; the code: owner
    assert ident.kind == "human" and ident.token_id is None
    assert open_auth.for_document("", doc).user_id == "guest"  # an empty ?token= is no token


def test_open_mode_account_without_a_token_is_a_guest_user(open_auth):
    ident = open_auth.for_account(None)
    assert (ident.user_id, ident.role, ident.doc_id) == ("guest", Role.USER, None)


def test_tokens_mode_without_a_token_is_refused(tokens_auth, doc):
    for token in (None, ""):
        with pytest.raises(InvalidToken):
            tokens_auth.for_document(token, doc)
        with pytest.raises(InvalidToken):
            tokens_auth.for_account(token)


def test_share_link_keeps_its_role_on_an_open_hub(open_auth, doc):
    """A viewer's link stays read-only even though a token-less guest could write."""
    token, _ = open_auth.issue(user_id="rev", name="Reviewer", role="viewer", doc_id=doc)
    ident = open_auth.for_document(token, doc)
    assert ident.role is Role.VIEWER and not ident.role.can_write
    assert ident.user_id == "rev"


def test_user_token_opens_any_document_as_owner_on_an_open_hub(open_auth, doc, other_doc):
    token, token_id = open_auth.issue(user_id="alice", name="Alice", role="user")
    for d in (doc, other_doc):
        ident = open_auth.for_document(token, d)
        assert (ident.user_id, ident.name, ident.role, ident.doc_id, ident.token_id) == (
            "alice", "Alice", Role.OWNER, d, token_id)


def test_user_token_opens_no_document_in_tokens_mode(tokens_auth, doc):
    token, _ = tokens_auth.issue(user_id="alice", name="Alice", role="user")
    with pytest.raises(PermissionDenied):
        tokens_auth.for_document(token, doc)
    assert tokens_auth.for_account(token).role is Role.USER


def test_share_token_used_as_account_is_its_share_identity(tokens_auth, doc):
    token, _ = tokens_auth.issue(user_id="u", name="U", role="viewer", doc_id=doc)
    ident = tokens_auth.for_account(token)
    assert ident.role is Role.VIEWER and ident.doc_id == doc


def test_new_user_ids_are_distinct():
    ids = {Authenticator.new_user_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 12 for i in ids)


def test_5xx_error_bodies_say_the_kind_not_the_text():
    from collab.api import error_response
    from collab.exceptions import ConfigError, InvalidRequest, Unavailable

    body = error_response(ConfigError("cannot open /secret/path/db.sqlite")).body
    assert b"/secret" not in body and b"ConfigError" in body
    assert b"bad thing" in error_response(InvalidRequest("bad thing")).body  # 4xx: the message helps
    assert b"broker down" in error_response(Unavailable("broker down")).body  # says what to wait for
