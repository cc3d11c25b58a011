using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace Microsandbox.Protocol;

/// <summary>JSON encoding of control payloads through the source-generated context.</summary>
public static class ProtocolJson
{
    /// <summary>Encodes a control message.</summary>
    public static byte[] Serialize<T>(T message)
        where T : class => JsonSerializer.SerializeToUtf8Bytes(message, TypeInfo<T>());

    /// <summary>Decodes a control message; malformed JSON is a <see cref="ProtocolException"/>.</summary>
    public static T Deserialize<T>(ReadOnlySpan<byte> payload)
        where T : class
    {
        try
        {
            return JsonSerializer.Deserialize(payload, TypeInfo<T>())
                ?? throw new ProtocolException($"A {typeof(T).Name} payload was JSON null.");
        }
        catch (JsonException ex)
        {
            throw new ProtocolException($"A {typeof(T).Name} payload is not valid JSON: {ex.Message}", ex);
        }
    }

    private static JsonTypeInfo<T> TypeInfo<T>() =>
        (ProtocolJsonContext.Default.GetTypeInfo(typeof(T)) ?? FileJsonContext.Default.GetTypeInfo(typeof(T)))
            as JsonTypeInfo<T>
            ?? throw new InvalidOperationException($"{typeof(T).Name} is not a protocol message.");
}
