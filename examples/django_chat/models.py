from __future__ import annotations

from django.db import models


class Message(models.Model):
    """One chat message, stored by the worker whose client sent it."""

    room = models.CharField(max_length=64, db_index=True)
    author = models.CharField(max_length=64)
    text = models.TextField()
    #: The worker process that stored it: shows which worker served the sender.
    worker_pid = models.IntegerField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "room": self.room,
            "author": self.author,
            "text": self.text,
            "pid": self.worker_pid,
        }
