"""SMTP delivery (smtplib in a worker thread) and the SMTP health probe."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
from email.message import EmailMessage
from email.utils import formatdate

from email_worker.settings import SmtpSettings
from saaschat.jobs import EmailJob


def build_email(job: EmailJob, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = job.to
    message["Subject"] = job.subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    # Stable per job: a redelivered job is recognisable as the same mail.
    message["Message-ID"] = f"<{job.job_id}@{sender.rsplit('@', 1)[1]}>"
    message["X-Job-ID"] = job.job_id
    message.set_content(job.body)
    return message


def is_permanent(exc: BaseException) -> bool:
    """True for failures a retry cannot fix: 5xx replies for the sender or every recipient."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return bool(codes) and all(500 <= code < 600 for code in codes)
    if isinstance(exc, smtplib.SMTPResponseException):
        return 500 <= exc.smtp_code < 600 and exc.smtp_code not in (421,)
    return False


class SmtpSender:
    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    def _send_sync(self, message: EmailMessage) -> None:
        s = self.settings
        with smtplib.SMTP(s.host, s.port, timeout=s.timeout) as client:
            client.ehlo_or_helo_if_needed()
            if s.starttls:
                client.starttls()
                client.ehlo()
            if s.username and s.password:
                client.login(s.username, s.password.reveal())
            client.send_message(message)

    async def send(self, message: EmailMessage) -> None:
        """Returns once the server accepted the message (250 after DATA)."""
        await asyncio.to_thread(self._send_sync, message)

    async def probe(self) -> None:
        """Connect, expect the 220 greeting, say QUIT."""
        reader, writer = await asyncio.open_connection(self.settings.host, self.settings.port)
        try:
            greeting = await reader.readline()
            if not greeting.startswith(b"220"):
                raise ConnectionError(f"unexpected SMTP greeting {greeting[:40]!r}")
            writer.write(b"QUIT\r\n")
            await writer.drain()
            await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
