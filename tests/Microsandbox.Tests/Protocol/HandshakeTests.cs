using Microsandbox.Protocol;

namespace Microsandbox.Tests.Protocol;

public sealed class HandshakeTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    [Fact]
    public void This_build_speaks_version_1()
    {
        Assert.Contains(1, Handshake.SupportedVersions);
        Assert.Equal(Handshake.SupportedVersions.Order(), Handshake.SupportedVersions);
    }

    [Fact]
    public void ChooseVersion_picks_the_highest_common_version_in_any_order()
    {
        int highest = Handshake.SupportedVersions.Max();
        int lowest = Handshake.SupportedVersions.Min();

        Assert.Equal(highest, Handshake.ChooseVersion(Handshake.SupportedVersions));
        Assert.Equal(highest, Handshake.ChooseVersion([highest + 7, highest, highest + 1, lowest]));
        Assert.Equal(highest, Handshake.ChooseVersion([lowest, highest + 1, highest]));
        Assert.Equal(lowest, Handshake.ChooseVersion([lowest - 1, lowest, highest + 50]));
    }

    [Fact]
    public void ChooseVersion_names_both_lists_when_nothing_matches()
    {
        int next = Handshake.SupportedVersions.Max() + 1;

        var ex = Assert.Throws<ProtocolException>(() => Handshake.ChooseVersion([next, next + 1]));

        Assert.Contains($"[{next}, {next + 1}]", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"[{string.Join(", ", Handshake.SupportedVersions)}]", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ChooseVersion_refuses_an_empty_list()
    {
        var ex = Assert.Throws<ProtocolException>(() => Handshake.ChooseVersion([]));
        Assert.Contains("[]", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AcceptAsync_answers_a_hello_with_a_hello_ack()
    {
        var (near, far) = await Streams.SocketPairAsync();
        await using (near)
        await using (far)
        {
            using var farWriter = new FrameWriter(far);
            using var nearWriter = new FrameWriter(near);
            await farWriter.WriteAsync(0, FrameType.Hello, new HelloMessage
            {
                Versions = Handshake.SupportedVersions,
                Capabilities = ["exec", "signal"],
                Peer = "msb-runtime",
                KernelRelease = "6.1.0",
            });

            var (hello, version) = await Handshake.AcceptAsync(
                new FrameReader(near), nearWriter, "msb-engine", CancellationToken.None).WaitAsync(Timeout);

            Assert.Equal(Handshake.SupportedVersions.Max(), version);
            Assert.Equal(["exec", "signal"], hello.Capabilities);
            Assert.Equal("msb-runtime", hello.Peer);
            Assert.Equal("6.1.0", hello.KernelRelease);

            Frame ack = Assert.NotNull(await new FrameReader(far).ReadAsync().AsTask().WaitAsync(Timeout));
            Assert.Equal((0u, FrameType.HelloAck), (ack.Session, ack.Type));
            var body = ack.Read<HelloAckMessage>();
            Assert.Equal(version, body.Version);
            Assert.Equal("msb-engine", body.Peer);
        }
    }

    [Fact]
    public async Task AcceptAsync_turns_a_peer_error_into_PeerErrorException_and_answers_nothing()
    {
        using var input = new MemoryStream();
        using (var w = new FrameWriter(input))
        {
            await w.WriteAsync(0, FrameType.Error,
                new ErrorMessage { Code = "GuestBootFailed", Message = "The VM exited.", Detail = "Kernel panic" });
        }

        input.Position = 0;
        using var output = new MemoryStream();
        using var writer = new FrameWriter(output);

        var ex = await Assert.ThrowsAsync<PeerErrorException>(
            () => Handshake.AcceptAsync(new FrameReader(input), writer, "engine", CancellationToken.None));

        Assert.Equal("GuestBootFailed", ex.Error.Code);
        Assert.Equal("The VM exited.", ex.Message);
        Assert.Equal("Kernel panic", ex.Error.Detail);
        Assert.Equal(0, output.Length);
    }

    [Fact]
    public async Task AcceptAsync_reports_a_version_mismatch_to_the_peer_then_throws()
    {
        int unknown = Handshake.SupportedVersions.Max() + 41;
        var (near, far) = await Streams.SocketPairAsync();
        await using (near)
        await using (far)
        {
            using var farWriter = new FrameWriter(far);
            using var nearWriter = new FrameWriter(near);
            await farWriter.WriteAsync(0, FrameType.Hello, new HelloMessage { Versions = [unknown] });

            var ex = await Assert.ThrowsAsync<ProtocolException>(() => Handshake.AcceptAsync(
                new FrameReader(near), nearWriter, "engine", CancellationToken.None).WaitAsync(Timeout));

            Frame error = Assert.NotNull(await new FrameReader(far).ReadAsync().AsTask().WaitAsync(Timeout));
            Assert.Equal((0u, FrameType.Error), (error.Session, error.Type));
            var body = error.Read<ErrorMessage>();
            Assert.Equal("VersionMismatch", body.Code);
            Assert.Equal(ex.Message, body.Message);
            Assert.Contains($"[{unknown}]", body.Message, StringComparison.Ordinal);

            // Nothing else follows the error: no HelloAck.
            near.Socket.Shutdown(System.Net.Sockets.SocketShutdown.Send);
            Assert.Null(await new FrameReader(far).ReadAsync().AsTask().WaitAsync(Timeout));
        }
    }

    [Fact]
    public async Task AcceptAsync_throws_when_the_peer_closes_before_its_hello()
    {
        using var output = new MemoryStream();
        using var writer = new FrameWriter(output);

        var ex = await Assert.ThrowsAsync<ProtocolException>(
            () => Handshake.AcceptAsync(new FrameReader(new MemoryStream()), writer, "e", CancellationToken.None));
        Assert.Contains("before its hello", ex.Message, StringComparison.Ordinal);
        Assert.Equal(0, output.Length);
    }

    [Theory]
    [InlineData(0u, FrameType.Pong)]
    [InlineData(0u, FrameType.HelloAck)]
    [InlineData(1u, FrameType.Hello)]
    public async Task AcceptAsync_refuses_anything_but_a_hello_on_session_0(uint session, FrameType type)
    {
        using var input = new MemoryStream();
        using (var w = new FrameWriter(input))
        {
            await w.WriteAsync(session, type, new HelloMessage { Versions = [1] });
        }

        input.Position = 0;
        using var output = new MemoryStream();
        using var writer = new FrameWriter(output);

        var ex = await Assert.ThrowsAsync<ProtocolException>(
            () => Handshake.AcceptAsync(new FrameReader(input), writer, "e", CancellationToken.None));
        Assert.Contains($"{type} on session {session}", ex.Message, StringComparison.Ordinal);
        Assert.Equal(0, output.Length);
    }

    [Fact]
    public async Task AcceptAsync_turns_a_hello_with_null_versions_into_a_version_mismatch()
    {
        using var input = new MemoryStream();
        using (var w = new FrameWriter(input))
        {
            await w.WriteAsync(0, FrameType.Hello, """{"versions":null}"""u8.ToArray());
        }

        input.Position = 0;
        using var output = new MemoryStream();
        using var writer = new FrameWriter(output);

        await Assert.ThrowsAsync<ProtocolException>(
            () => Handshake.AcceptAsync(new FrameReader(input), writer, "e", CancellationToken.None));
        output.Position = 0;
        Frame error = Assert.NotNull(await new FrameReader(output).ReadAsync());
        Assert.Equal("VersionMismatch", error.Read<ErrorMessage>().Code);
    }

    [Fact]
    public void PeerErrorException_requires_an_error()
    {
        Assert.Throws<ArgumentNullException>(() => new PeerErrorException(null!));
    }
}
