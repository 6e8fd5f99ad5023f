"""The channel calls of a dialect whose servers have no channel API (Expo, CodePush).

Such a dialect's channel is the app's own configuration (an Expo `expo-channel-name` header, a
CodePush deployment key): `set_channel` and the other channel calls raise `ProtocolError`
naming what stands for the channel instead.
"""

from __future__ import annotations

from agent.errors import ProtocolError
from agent.protocol.base import ChannelAnswer, ChannelListing, DeviceInfo, OutgoingRequest


class NoChannelApi:
    """Mixin: every channel call raises `ProtocolError(self.no_channel_api)`."""

    no_channel_api: str

    def channel_set_request(self, info: DeviceInfo, channel: str) -> OutgoingRequest:
        raise ProtocolError(self.no_channel_api)

    def channel_get_request(self, info: DeviceInfo) -> OutgoingRequest:
        raise ProtocolError(self.no_channel_api)

    def channel_unset_request(self, info: DeviceInfo) -> OutgoingRequest | None:
        raise ProtocolError(self.no_channel_api)

    def channel_list_request(self, info: DeviceInfo) -> OutgoingRequest:
        raise ProtocolError(self.no_channel_api)

    def parse_channel(self, status: int, body: bytes) -> ChannelAnswer:
        raise ProtocolError(self.no_channel_api)

    def parse_channel_list(self, status: int, body: bytes) -> list[ChannelListing]:
        raise ProtocolError(self.no_channel_api)
