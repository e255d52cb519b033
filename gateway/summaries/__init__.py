"""Rolling chat summaries (``mnx.summarize``): when a chat's stored history grows past a
threshold, its older messages are folded, chunk by chunk, into one rolling summary by a
background job, and later turns replay that summary plus the newest messages word for word
instead of cutting turn 1 away. This package holds the pieces of that: token counts of stored
messages (``tokens``), the summarizer plugin protocol (``summarizer``; the built-in
summarizers live in ``plugins.summarizers``), and the job, replay and storage around them.
"""
