using System.Net.Sockets;
using System.Threading.Channels;
using Microsandbox.Protocol;

namespace Microsandbox.Runtime;

/// <summary>
/// One engine client's side of the relay: frames from the agent for this client queue here and a
/// task of its own writes them, so a client that reads slowly delays only itself, never the agent
/// channel the other clients share. Flow-controlled sessions bound the queue: the agent sends no
/// session more than one window its client has not granted back.
/// </summary>
internal sealed class ClientLink
{
    private readonly Channel<Frame> _queue =
        Channel.CreateUnbounded<Frame>(new UnboundedChannelOptions { SingleReader = true });

    public ClientLink(FrameWriter writer)
    {
        Writer = writer;
        _ = Task.Run(PumpAsync);
    }

    /// <summary>The client's writer, for the replies the relay sends itself (hello, pong).</summary>
    public FrameWriter Writer { get; }

    /// <summary>Queues a frame for the client; dropped once the client has gone.</summary>
    public void Post(uint session, FrameType type, ReadOnlyMemory<byte> payload) =>
        _queue.Writer.TryWrite(new Frame(session, type, payload));

    /// <summary>No more frames: the client left.</summary>
    public void Complete() => _queue.Writer.TryComplete();

    private async Task PumpAsync()
    {
        await foreach (Frame frame in _queue.Reader.ReadAllAsync().ConfigureAwait(false))
        {
            try
            {
                await Writer.WriteAsync(frame.Session, frame.Type, frame.Payload).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
            {
                // The client left; its reader ends its sessions. Drop what is still queued.
                Complete();
            }
        }
    }
}
