using System.Buffers.Binary;
using System.IO.Pipes;
using System.Net.Sockets;

namespace Microsandbox.Tests.Protocol;

/// <summary>Real connected streams for protocol tests: a Unix socket pair and an anonymous pipe.</summary>
internal static class Streams
{
    /// <summary>Two ends of a connected Unix domain stream socket; both streams own their sockets.</summary>
    public static async Task<(NetworkStream Left, NetworkStream Right)> SocketPairAsync()
    {
        string dir = Directory.CreateTempSubdirectory("msb-test-").FullName;
        string path = Path.Join(dir, "s");
        try
        {
            using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            listener.Bind(new UnixDomainSocketEndPoint(path));
            listener.Listen(1);
            var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            Task<Socket> accept = listener.AcceptAsync();
            await client.ConnectAsync(new UnixDomainSocketEndPoint(path));
            Socket server = await accept;
            return (new NetworkStream(client, ownsSocket: true), new NetworkStream(server, ownsSocket: true));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>An anonymous pipe: bytes written to <c>Out</c> are read from <c>In</c>.</summary>
    public static (AnonymousPipeServerStream Out, AnonymousPipeClientStream In) Pipe()
    {
        var server = new AnonymousPipeServerStream(PipeDirection.Out);
        var client = new AnonymousPipeClientStream(PipeDirection.In, server.ClientSafePipeHandle);
        return (server, client);
    }

    /// <summary>A raw frame header, built by hand so the tests do not trust the writer.</summary>
    public static byte[] Header(uint length, uint session, byte type)
    {
        var header = new byte[9];
        BinaryPrimitives.WriteUInt32LittleEndian(header, length);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(4), session);
        header[8] = type;
        return header;
    }

    /// <summary>A deterministic, position-dependent byte pattern.</summary>
    public static byte[] Pattern(int length, int seed)
    {
        var data = new byte[length];
        for (int i = 0; i < length; i++)
        {
            data[i] = (byte)((i * 31) + (seed * 7) + (i >> 8));
        }

        return data;
    }
}
