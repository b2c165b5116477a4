"""What storing a reply, a mention or a change entry does besides its INSERT, in the writer's
transaction (so the entry and its effect commit together, or neither does):

- every such message gets its im_message_relation row (what it refers to, whom it mentions);
- an edit rewrites the edited message's text, a recall empties the recalled message (and the
  text of its edits) so that history, search and the offline push answer its current state;
  the writer takes that message out of the search index before, and puts it back as it now
  reads after (`changed_message`).

Reactions change nothing stored: they are counted from their entries when history is read.
Plain messages have none of this (the writer asks `has_relations` first), so its hot path
stays one INSERT per batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from app.chat.wire import MEDIA_EDIT, MEDIA_RECALL, MEDIA_RECALLED, MEDIA_TEXT


class Related(Protocol):
    media: int
    content: str
    ref_id: int
    mentions: str


def has_relations(draft: Related) -> bool:
    return bool(draft.ref_id or draft.mentions)


def changed_message(draft: Related) -> int:
    """The message whose text an edit or a recall changes (its search index entry with it:
    app/service/search/, taken out before, put back after); 0 for anything else."""
    return draft.ref_id if draft.media in (MEDIA_EDIT, MEDIA_RECALL) else 0


def statements(draft: Related, message_id: int) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """The statements (`?` placeholders) that go with storing `draft` as `message_id`."""
    yield ("INSERT INTO im_message_relation (message_id, ref_id, mentions) VALUES (?, ?, ?)",
           (message_id, draft.ref_id or None, draft.mentions))
    if draft.media == MEDIA_EDIT:
        # Text messages only, and not once recalled (media then is MEDIA_RECALLED).
        yield ("UPDATE im_message SET content = ? WHERE id = ? AND media = ?",
               (draft.content, draft.ref_id, MEDIA_TEXT))
    elif draft.media == MEDIA_RECALL:
        yield ("UPDATE im_message SET media = ?, content = '', pic = '', url = '', memo = '' "
               "WHERE id = ?", (MEDIA_RECALLED, draft.ref_id))
        yield ("UPDATE im_message SET content = '' WHERE media = ? AND id IN "
               "(SELECT message_id FROM im_message_relation WHERE ref_id = ?)",
               (MEDIA_EDIT, draft.ref_id))
