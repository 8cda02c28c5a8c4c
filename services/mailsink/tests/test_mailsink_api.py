from email.message import EmailMessage
from types import SimpleNamespace

from mailsink.main import SinkHandler, build_app
from mailsink.store import MailStore, parse_mail


def raw_mail(to="zoe@example.com", subject="Hello", body="Line one\nLine two\n"):
    message = EmailMessage()
    message["From"] = "no-reply@my-saas-chat.local"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    return message.as_bytes().replace(b"\n", b"\r\n")  # as it travels over SMTP


def test_parse_mail_gives_subject_and_text_body():
    parsed = parse_mail(raw_mail())
    assert parsed["subject"] == "Hello"
    assert parsed["body"] == "Line one\nLine two"
    assert parsed["headers"]["To"] == "zoe@example.com"


def test_store_limit_and_recipient_filter():
    store = MailStore(limit=2)
    store.add("a@x.io", ["one@x.io"], raw_mail(to="one@x.io"))
    store.add("a@x.io", ["two@x.io"], raw_mail(to="two@x.io"))
    store.add("a@x.io", ["Two@x.io"], raw_mail(to="two@x.io"))
    assert len(store) == 2
    assert [m["id"] for m in store.list()] == [2, 3]
    assert len(store.list(to="two@x.io")) == 2
    assert store.list(to="one@x.io") == []
    assert store.clear() == 2 and len(store) == 0


async def test_smtp_handler_stores_and_http_api_lists_and_deletes(service_context, make_client):
    store = MailStore()
    handler = SinkHandler(store)
    envelope = SimpleNamespace(
        mail_from="no-reply@my-saas-chat.local",
        rcpt_tos=["zoe@example.com"],
        original_content=raw_mail(),
        content=None,
    )
    assert (await handler.handle_DATA(None, None, envelope)).startswith("250")
    client = await make_client(build_app(service_context(), store))
    messages = (await (await client.get("/messages")).json())["messages"]
    assert len(messages) == 1
    assert messages[0]["from"] == "no-reply@my-saas-chat.local"
    assert messages[0]["to"] == ["zoe@example.com"]
    assert (messages[0]["subject"], messages[0]["body"]) == ("Hello", "Line one\nLine two")
    assert (await (await client.delete("/messages")).json()) == {"deleted": 1}
    assert (await (await client.get("/messages")).json()) == {"messages": []}
    assert (await client.get("/health/live")).status == 200
