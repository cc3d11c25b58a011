using System.Text;
using System.Text.Json;
using Microsandbox.Protocol;

namespace Microsandbox.Tests.Protocol;

public sealed class MessageTests
{
    private static async Task<(Frame Frame, JsonElement Json)> RoundTripAsync<T>(uint session, FrameType type, T message)
        where T : class
    {
        var (left, right) = await Streams.SocketPairAsync();
        await using (left)
        await using (right)
        {
            using var writer = new FrameWriter(left);
            await writer.WriteAsync(session, type, message);
            Frame frame = Assert.NotNull(await new FrameReader(right).ReadAsync());
            Assert.Equal((session, type), (frame.Session, frame.Type));
            using var doc = JsonDocument.Parse(frame.Payload);
            return (frame, doc.RootElement.Clone());
        }
    }

    private static string[] Names(JsonElement json) => [.. json.EnumerateObject().Select(p => p.Name)];

    [Fact]
    public async Task Hello_round_trips_with_camel_case_names()
    {
        var sent = new HelloMessage
        {
            Versions = [1, 2],
            Capabilities = ["exec", "stdin", "signal", "shutdown"],
            Peer = "msb-agent 0.1.0",
            KernelRelease = "6.12.0-test",
        };

        var (frame, json) = await RoundTripAsync(0, FrameType.Hello, sent);

        Assert.Equal(["versions", "capabilities", "peer", "kernelRelease"], Names(json));
        var got = frame.Read<HelloMessage>();
        Assert.Equal(sent.Versions, got.Versions);
        Assert.Equal(sent.Capabilities, got.Capabilities);
        Assert.Equal(sent.Peer, got.Peer);
        Assert.Equal(sent.KernelRelease, got.KernelRelease);
    }

    [Fact]
    public async Task Hello_omits_null_fields()
    {
        var (frame, json) = await RoundTripAsync(0, FrameType.Hello, new HelloMessage { Versions = [1] });

        Assert.Equal(["versions", "capabilities"], Names(json));
        var got = frame.Read<HelloMessage>();
        Assert.Equal([1], got.Versions);
        Assert.Empty(got.Capabilities);
        Assert.Null(got.Peer);
        Assert.Null(got.KernelRelease);
    }

    [Fact]
    public async Task HelloAck_round_trips()
    {
        var (frame, json) = await RoundTripAsync(0, FrameType.HelloAck,
            new HelloAckMessage { Version = 1, Peer = "msb-runtime" });

        Assert.Equal(1, json.GetProperty("version").GetInt32());
        Assert.Equal("msb-runtime", json.GetProperty("peer").GetString());
        var got = frame.Read<HelloAckMessage>();
        Assert.Equal(1, got.Version);
        Assert.Equal("msb-runtime", got.Peer);
    }

    [Theory]
    [InlineData(FrameType.Error)]
    [InlineData(FrameType.ExecFailed)]
    public async Task ErrorMessage_round_trips(FrameType type)
    {
        var sent = new ErrorMessage { Code = "GuestNotReady", Message = "not ready", Detail = "console\ntail" };

        var (frame, json) = await RoundTripAsync(3, type, sent);

        Assert.Equal(["code", "message", "detail"], Names(json));
        var got = frame.Read<ErrorMessage>();
        Assert.Equal(sent.Code, got.Code);
        Assert.Equal(sent.Message, got.Message);
        Assert.Equal(sent.Detail, got.Detail);
    }

    [Fact]
    public async Task ErrorMessage_without_detail_omits_it()
    {
        var (frame, json) = await RoundTripAsync(0, FrameType.Error, new ErrorMessage { Code = "X", Message = "y" });

        Assert.Equal(["code", "message"], Names(json));
        Assert.Null(frame.Read<ErrorMessage>().Detail);
    }

    [Fact]
    public async Task ExecRequest_round_trips()
    {
        var sent = new ExecRequest
        {
            Argv = ["/bin/sh", "-c", "echo \"$GREETING\" ü"],
            Environment = new Dictionary<string, string> { ["GREETING"] = "hi", ["EMPTY"] = "" },
            WorkingDirectory = "/tmp",
            User = "nobody:nogroup",
            Stdin = true,
            FlowControl = true,
            Terminal = new TerminalSize { Rows = 30, Columns = 100 },
        };

        var (frame, json) = await RoundTripAsync(1, FrameType.ExecRequest, sent);

        Assert.Equal(["argv", "environment", "workingDirectory", "user", "stdin", "flowControl", "terminal"],
            Names(json));
        Assert.Equal(30, json.GetProperty("terminal").GetProperty("rows").GetInt32());
        var got = frame.Read<ExecRequest>();
        Assert.Equal(sent.Argv, got.Argv);
        Assert.Equal(sent.Environment.OrderBy(p => p.Key), got.Environment.OrderBy(p => p.Key));
        Assert.Equal("/tmp", got.WorkingDirectory);
        Assert.Equal("nobody:nogroup", got.User);
        Assert.True(got.Stdin);
        Assert.True(got.FlowControl);
        Assert.Equal((30, 100), (got.Terminal!.Rows, got.Terminal.Columns));
    }

    [Fact]
    public async Task ExecRequest_defaults_survive_a_round_trip()
    {
        var (frame, json) = await RoundTripAsync(1, FrameType.ExecRequest, new ExecRequest { Argv = ["true"] });

        Assert.Equal(["argv", "environment", "stdin", "flowControl"], Names(json));
        var got = frame.Read<ExecRequest>();
        Assert.Equal(["true"], got.Argv);
        Assert.Empty(got.Environment);
        Assert.Null(got.WorkingDirectory);
        Assert.Null(got.User);
        Assert.Null(got.Terminal);
        Assert.False(got.Stdin);
        Assert.False(got.FlowControl);
    }

    [Fact]
    public async Task ExecStarted_round_trips()
    {
        var (frame, json) = await RoundTripAsync(5, FrameType.ExecStarted, new ExecStarted { Pid = 4242 });

        Assert.Equal(4242, json.GetProperty("pid").GetInt32());
        Assert.Equal(4242, frame.Read<ExecStarted>().Pid);
    }

    [Fact]
    public async Task ExecExited_round_trips_with_and_without_a_signal()
    {
        var (plain, plainJson) = await RoundTripAsync(5, FrameType.Exited, new ExecExited { ExitCode = 3 });
        var (killed, killedJson) = await RoundTripAsync(5, FrameType.Exited,
            new ExecExited { ExitCode = 137, Signal = 9 });

        Assert.Equal(["exitCode"], Names(plainJson));
        Assert.Equal(["exitCode", "signal"], Names(killedJson));
        Assert.Equal((3, (int?)null), (plain.Read<ExecExited>().ExitCode, plain.Read<ExecExited>().Signal));
        Assert.Equal((137, (int?)9), (killed.Read<ExecExited>().ExitCode, killed.Read<ExecExited>().Signal));
    }

    [Fact]
    public async Task SignalRequest_round_trips()
    {
        var (frame, json) = await RoundTripAsync(7, FrameType.Signal, new SignalRequest { Signal = 15 });

        Assert.Equal(15, json.GetProperty("signal").GetInt32());
        Assert.Equal(15, frame.Read<SignalRequest>().Signal);
        Assert.False(frame.Read<SignalRequest>().ProcessTree);

        var (tree, treeJson) = await RoundTripAsync(7, FrameType.Signal,
            new SignalRequest { Signal = 9, ProcessTree = true });
        Assert.Equal(["signal", "processTree"], Names(treeJson));
        Assert.True(tree.Read<SignalRequest>().ProcessTree);
    }

    [Fact]
    public async Task TerminalSize_round_trips_as_a_Resize()
    {
        var (frame, json) = await RoundTripAsync(3, FrameType.Resize, new TerminalSize { Rows = 50, Columns = 132 });

        Assert.Equal(["rows", "columns"], Names(json));
        Assert.Equal((50, 132), (frame.Read<TerminalSize>().Rows, frame.Read<TerminalSize>().Columns));
    }

    [Fact]
    public async Task ProcessSignalRequest_round_trips()
    {
        var (frame, json) = await RoundTripAsync(5, FrameType.SignalProcess,
            new ProcessSignalRequest { Pid = 812, Signal = 1, ProcessTree = true });

        Assert.Equal(["pid", "signal", "processTree"], Names(json));
        var got = frame.Read<ProcessSignalRequest>();
        Assert.Equal((812, 1, true), (got.Pid, got.Signal, got.ProcessTree));
    }

    [Fact]
    public async Task WindowUpdate_round_trips()
    {
        var (frame, json) = await RoundTripAsync(3, FrameType.Window, new WindowUpdate { Bytes = 65536 });

        Assert.Equal(["bytes"], Names(json));
        Assert.Equal(65536, frame.Read<WindowUpdate>().Bytes);
    }

    [Fact]
    public async Task ShutdownRequest_round_trips()
    {
        var (frame, json) = await RoundTripAsync(0, FrameType.Shutdown,
            new ShutdownRequest { TimeoutMilliseconds = 2500, Reason = "Stop-Sandbox" });

        Assert.Equal(["timeoutMilliseconds", "reason"], Names(json));
        var got = frame.Read<ShutdownRequest>();
        Assert.Equal(2500, got.TimeoutMilliseconds);
        Assert.Equal("Stop-Sandbox", got.Reason);
    }

    [Fact]
    public void Unknown_fields_are_ignored_for_forward_compatibility()
    {
        var got = ProtocolJson.Deserialize<HelloAckMessage>("""{"version":1,"future":{"a":[1,2]},"peer":"p"}"""u8);

        Assert.Equal(1, got.Version);
        Assert.Equal("p", got.Peer);
    }

    [Fact]
    public void Field_names_are_case_sensitive()
    {
        var got = ProtocolJson.Deserialize<SignalRequest>("""{"Signal":9}"""u8);

        Assert.Equal(0, got.Signal);
    }

    [Theory]
    [InlineData("")]
    [InlineData("{")]
    [InlineData("{not json}")]
    [InlineData("""{"versions":"one"}""")]
    [InlineData("""{"versions":[1,]}""")]
    [InlineData("[1]")]
    [InlineData("null")]
    [InlineData("{} trailing")]
    public async Task A_malformed_json_payload_throws_ProtocolException(string payload)
    {
        using var stream = new MemoryStream();
        using (var writer = new FrameWriter(stream))
        {
            await writer.WriteAsync(0, FrameType.Hello, Encoding.UTF8.GetBytes(payload));
        }

        stream.Position = 0;
        Frame frame = Assert.NotNull(await new FrameReader(stream).ReadAsync());

        var ex = Assert.Throws<ProtocolException>(() => frame.Read<HelloMessage>());
        Assert.Contains(nameof(HelloMessage), ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Invalid_utf8_in_a_payload_throws_ProtocolException()
    {
        byte[] payload = [.. """{"code":" """u8, 0xC3, 0x28, .. "\"}"u8];

        var ex = Assert.Throws<ProtocolException>(() => ProtocolJson.Deserialize<ErrorMessage>(payload));
        Assert.IsType<JsonException>(ex.InnerException);
    }

    [Theory]
    [InlineData("{}")]
    [InlineData("""{"versions":null,"capabilities":null,"argv":null,"environment":null,"code":null,"message":null}""")]
    public void Omitted_or_null_fields_decode_to_empty_values_never_to_null(string json)
    {
        // The contract's lists and strings are non-nullable: a peer that leaves one out (or sends
        // null) must get the documented empty value, not a null that fails far from the cause,
        // such as an agent dereferencing a null argv.
        byte[] payload = Encoding.UTF8.GetBytes(json);
        var hello = ProtocolJson.Deserialize<HelloMessage>(payload);
        var exec = ProtocolJson.Deserialize<ExecRequest>(payload);
        var error = ProtocolJson.Deserialize<ErrorMessage>(payload);

        Assert.Empty(hello.Versions);
        Assert.Empty(hello.Capabilities);
        Assert.Empty(exec.Argv);
        Assert.Empty(exec.Environment);
        Assert.False(exec.Stdin);
        Assert.Equal("", error.Code);
        Assert.Equal("", error.Message);
    }

    [Fact]
    public void A_message_type_outside_the_protocol_is_refused()
    {
        Assert.Throws<InvalidOperationException>(() => ProtocolJson.Serialize(new Version(1, 0)));
    }
}
