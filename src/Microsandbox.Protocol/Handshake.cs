namespace Microsandbox.Protocol;

/// <summary>Version negotiation shared by the agent, the runtime and the engine.</summary>
public static class Handshake
{
    /// <summary>The protocol versions this build speaks, oldest first.</summary>
    public static readonly IReadOnlyList<int> SupportedVersions = [1];

    /// <summary>The highest version both lists contain, or a <see cref="ProtocolException"/> naming both.</summary>
    public static int ChooseVersion(IReadOnlyList<int> theirs)
    {
        ArgumentNullException.ThrowIfNull(theirs);
        int best = -1;
        foreach (int v in theirs)
        {
            if (v > best && SupportedVersions.Contains(v))
            {
                best = v;
            }
        }

        if (best < 0)
        {
            throw new ProtocolException(
                $"No common protocol version: peer speaks [{string.Join(", ", theirs)}], " +
                $"this side speaks [{string.Join(", ", SupportedVersions)}].");
        }

        return best;
    }

    /// <summary>
    /// Client side: reads the peer's <see cref="HelloMessage"/> (or its <see cref="ErrorMessage"/>),
    /// answers with <see cref="HelloAckMessage"/> and returns the hello with the chosen version.
    /// </summary>
    public static async Task<(HelloMessage Hello, int Version)> AcceptAsync(
        FrameReader reader, FrameWriter writer, string peer, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(reader);
        ArgumentNullException.ThrowIfNull(writer);
        Frame frame = await reader.ReadAsync(cancellationToken).ConfigureAwait(false)
            ?? throw new ProtocolException("The peer closed the connection before its hello.");
        if (frame.Type == FrameType.Error)
        {
            var error = frame.Read<ErrorMessage>();
            throw new PeerErrorException(error);
        }

        if (frame.Type != FrameType.Hello || frame.Session != 0)
        {
            throw new ProtocolException($"Expected a hello on session 0, got {frame.Type} on session {frame.Session}.");
        }

        var hello = frame.Read<HelloMessage>();
        int version;
        try
        {
            version = ChooseVersion(hello.Versions);
        }
        catch (ProtocolException ex)
        {
            await writer.WriteAsync(0, FrameType.Error,
                new ErrorMessage { Code = "VersionMismatch", Message = ex.Message }, cancellationToken)
                .ConfigureAwait(false);
            throw;
        }

        await writer.WriteAsync(0, FrameType.HelloAck, new HelloAckMessage { Version = version, Peer = peer },
            cancellationToken).ConfigureAwait(false);
        return (hello, version);
    }
}

/// <summary>The peer reported a failure with an <see cref="ErrorMessage"/>.</summary>
public sealed class PeerErrorException : Exception
{
    /// <summary>Creates the exception from the peer's message.</summary>
    public PeerErrorException(ErrorMessage error)
        : base((error ?? throw new ArgumentNullException(nameof(error))).Message)
    {
        Error = error;
    }

    /// <summary>What the peer said.</summary>
    public ErrorMessage Error { get; }
}
