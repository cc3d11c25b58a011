namespace Microsandbox.Protocol;

/// <summary>One unit on the wire: a session id, a type and a payload.</summary>
/// <param name="Session">The session the frame belongs to; 0 is the connection itself.</param>
/// <param name="Type">What the payload means.</param>
/// <param name="Payload">JSON for control frames, raw bytes for data frames.</param>
public readonly record struct Frame(uint Session, FrameType Type, ReadOnlyMemory<byte> Payload)
{
    /// <summary>Bytes before the payload: length (4), session (4), type (1).</summary>
    public const int HeaderSize = 9;

    /// <summary>The largest payload either peer sends or accepts. Larger data is split.</summary>
    public const int MaxPayloadSize = 1024 * 1024;

    /// <summary>Decodes the JSON payload of a control frame.</summary>
    public T Read<T>()
        where T : class => ProtocolJson.Deserialize<T>(Payload.Span);
}
