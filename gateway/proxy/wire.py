"""The request/answer formats a provider surface speaks."""

from __future__ import annotations

from enum import Enum


class WireFormat(str, Enum):
    CHAT = "chat"            # OpenAI Chat Completions
    RESPONSES = "responses"  # OpenAI Responses
    MESSAGES = "messages"    # Anthropic Messages
    GEMINI = "gemini"        # Gemini generateContent


# Which provider speaks each format natively (and so gets the request untranslated).
NATIVE_PROVIDER = {WireFormat.CHAT: "openai", WireFormat.RESPONSES: "openai", WireFormat.MESSAGES: "anthropic",
                   WireFormat.GEMINI: "gemini"}
