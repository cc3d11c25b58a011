using Microsandbox.Protocol;

namespace Microsandbox.Tests.Protocol;

public sealed class FrameTests
{
    public static TheoryData<FrameType> AllFrameTypes()
    {
        var data = new TheoryData<FrameType>();
        foreach (FrameType type in Enum.GetValues<FrameType>())
        {
            data.Add(type);
        }

        return data;
    }

    [Fact]
    public void Every_frame_type_has_its_wire_value_and_is_known()
    {
        var expected = new Dictionary<FrameType, byte>
        {
            [FrameType.Hello] = 0x01,
            [FrameType.HelloAck] = 0x02,
            [FrameType.Ping] = 0x03,
            [FrameType.Pong] = 0x04,
            [FrameType.Error] = 0x05,
            [FrameType.ExecRequest] = 0x10,
            [FrameType.ExecStarted] = 0x11,
            [FrameType.Stdout] = 0x12,
            [FrameType.Stderr] = 0x13,
            [FrameType.Stdin] = 0x14,
            [FrameType.Exited] = 0x15,
            [FrameType.ExecFailed] = 0x16,
            [FrameType.Signal] = 0x17,
            [FrameType.Window] = 0x18,
            [FrameType.Resize] = 0x19,
            [FrameType.SignalProcess] = 0x1A,
            [FrameType.Shutdown] = 0x20,
            [FrameType.Release] = 0x21,
            [FrameType.FileRequest] = 0x30,
            [FrameType.FileData] = 0x31,
            [FrameType.FileEntries] = 0x32,
            [FrameType.FileResult] = 0x33,
        };

        Assert.Equal(expected.Keys.Order(), Enum.GetValues<FrameType>().Order());
        foreach (var (type, value) in expected)
        {
            Assert.Equal(value, (byte)type);
            Assert.True(FrameTypes.IsKnown(type));
        }
    }

    [Fact]
    public void Only_exited_execfailed_error_and_fileresult_end_a_session()
    {
        FrameType[] ending = [.. Enum.GetValues<FrameType>().Where(FrameTypes.EndsSession)];
        Assert.Equal([FrameType.Error, FrameType.Exited, FrameType.ExecFailed, FrameType.FileResult], ending);
    }

    [Theory]
    [MemberData(nameof(AllFrameTypes))]
    public async Task Every_frame_type_round_trips_through_a_memory_stream(FrameType type)
    {
        byte[] payload = Streams.Pattern(300, (int)type);
        using var stream = new MemoryStream();
        using (var writer = new FrameWriter(stream))
        {
            await writer.WriteAsync(0xA1B2C3D4u, type, payload);
        }

        Assert.Equal(Frame.HeaderSize + payload.Length, stream.Length);
        stream.Position = 0;
        var reader = new FrameReader(stream);
        Frame frame = Assert.NotNull(await reader.ReadAsync());
        Assert.Equal(0xA1B2C3D4u, frame.Session);
        Assert.Equal(type, frame.Type);
        Assert.Equal(payload, frame.Payload.ToArray());
        Assert.Null(await reader.ReadAsync());
    }

    [Theory]
    [MemberData(nameof(AllFrameTypes))]
    public async Task Every_frame_type_round_trips_over_a_socket(FrameType type)
    {
        var (left, right) = await Streams.SocketPairAsync();
        await using (left)
        await using (right)
        {
            using var writer = new FrameWriter(left);
            await writer.WriteAsync(7, type, Streams.Pattern(50, 1));
            await writer.WriteAsync(8, type, ReadOnlyMemory<byte>.Empty);
            var reader = new FrameReader(right);

            Frame first = Assert.NotNull(await reader.ReadAsync());
            Assert.Equal((7u, type), (first.Session, first.Type));
            Assert.Equal(Streams.Pattern(50, 1), first.Payload.ToArray());
            Frame second = Assert.NotNull(await reader.ReadAsync());
            Assert.Equal((8u, type), (second.Session, second.Type));
            Assert.True(second.Payload.IsEmpty);
        }
    }

    [Fact]
    public async Task Header_is_length_session_type_little_endian()
    {
        using var stream = new MemoryStream();
        using var writer = new FrameWriter(stream);
        await writer.WriteAsync(0x01020304u, FrameType.Stdout, "abc"u8.ToArray());

        // length counts session + type + payload: 4 + 1 + 3 = 8.
        byte[] expected = [0x08, 0x00, 0x00, 0x00, 0x04, 0x03, 0x02, 0x01, 0x12, (byte)'a', (byte)'b', (byte)'c'];
        Assert.Equal(expected, stream.ToArray());
    }

    [Fact]
    public async Task Reader_decodes_a_hand_built_frame()
    {
        byte[] bytes = [.. Streams.Header(5 + 2, uint.MaxValue, 0x14), 0xFF, 0x00];
        var reader = new FrameReader(new MemoryStream(bytes));

        Frame frame = Assert.NotNull(await reader.ReadAsync());
        Assert.Equal(uint.MaxValue, frame.Session);
        Assert.Equal(FrameType.Stdin, frame.Type);
        Assert.Equal(new byte[] { 0xFF, 0x00 }, frame.Payload.ToArray());
    }

    [Fact]
    public async Task Reader_reassembles_a_frame_that_arrives_one_byte_at_a_time()
    {
        var (left, right) = await Streams.SocketPairAsync();
        await using (left)
        await using (right)
        {
            byte[] payload = Streams.Pattern(40, 3);
            byte[] bytes = [.. Streams.Header((uint)(5 + payload.Length), 5, 0x13), .. payload];
            var reader = new FrameReader(right);
            ValueTask<Frame?> read = reader.ReadAsync();
            foreach (byte b in bytes)
            {
                await left.WriteAsync(new[] { b });
                await left.FlushAsync();
                await Task.Delay(1);
            }

            Frame frame = Assert.NotNull(await read);
            Assert.Equal((5u, FrameType.Stderr), (frame.Session, frame.Type));
            Assert.Equal(payload, frame.Payload.ToArray());
        }
    }

    [Fact]
    public async Task A_payload_of_exactly_the_maximum_is_accepted()
    {
        byte[] payload = Streams.Pattern(Frame.MaxPayloadSize, 9);
        using var stream = new MemoryStream();
        using var writer = new FrameWriter(stream);
        await writer.WriteAsync(1, FrameType.Stdout, payload);
        stream.Position = 0;

        Frame frame = Assert.NotNull(await new FrameReader(stream).ReadAsync());
        Assert.Equal(Frame.MaxPayloadSize, frame.Payload.Length);
        Assert.Equal(payload, frame.Payload.ToArray());
        Assert.Equal(1024 * 1024, Frame.MaxPayloadSize);
    }

    [Fact]
    public async Task Writing_a_payload_over_the_maximum_throws_and_writes_nothing()
    {
        using var stream = new MemoryStream();
        using var writer = new FrameWriter(stream);

        var ex = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(
            async () => await writer.WriteAsync(1, FrameType.Stdout, new byte[Frame.MaxPayloadSize + 1]));
        Assert.Equal("payload", ex.ParamName);
        Assert.Equal(Frame.MaxPayloadSize + 1, ex.ActualValue);
        Assert.Equal(0, stream.Length);
    }

    [Fact]
    public async Task Writing_a_message_whose_json_is_over_the_maximum_throws()
    {
        using var stream = new MemoryStream();
        using var writer = new FrameWriter(stream);
        var huge = new ErrorMessage { Code = "Big", Message = new string('x', Frame.MaxPayloadSize) };

        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(
            async () => await writer.WriteAsync(0, FrameType.Error, huge));
        Assert.Equal(0, stream.Length);
    }

    [Theory]
    [InlineData(0, 1)]
    [InlineData(1, 1)]
    [InlineData(1024 * 1024, 1)]
    [InlineData((1024 * 1024) + 1, 2)]
    [InlineData(2 * 1024 * 1024, 2)]
    [InlineData((5 * 1024 * 1024 / 2) + 17, 3)]
    public async Task WriteDataAsync_splits_data_into_frames_of_at_most_the_maximum(int size, int frames)
    {
        byte[] data = Streams.Pattern(size, 4);
        var (output, input) = Streams.Pipe();
        using (output)
        using (input)
        {
            // A pipe holds far less than a megabyte: the reader must run while the writer writes.
            Task write = Task.Run(async () =>
            {
                using var writer = new FrameWriter(output);
                await writer.WriteDataAsync(3, FrameType.Stdout, data);
                output.Dispose();
            });

            var reader = new FrameReader(input);
            var received = new List<Frame>();
            while (await reader.ReadAsync() is Frame frame)
            {
                received.Add(frame);
            }

            await write;
            Assert.Equal(frames, received.Count);
            Assert.All(received, f => Assert.Equal((3u, FrameType.Stdout), (f.Session, f.Type)));
            Assert.All(received, f => Assert.InRange(f.Payload.Length, 0, Frame.MaxPayloadSize));
            Assert.All(received.SkipLast(1), f => Assert.Equal(Frame.MaxPayloadSize, f.Payload.Length));
            Assert.Equal(data, received.SelectMany(f => f.Payload.ToArray()).ToArray());
        }
    }

    [Fact]
    public async Task Concurrent_writers_never_interleave_frames()
    {
        const int Writers = 8;
        const int FramesEach = 40;
        var (left, right) = await Streams.SocketPairAsync();
        await using (left)
        await using (right)
        {
            using var writer = new FrameWriter(left);

            // Sizes up to a few hundred KiB exceed the socket buffer, so every frame takes several
            // send calls; without whole-frame locking the bytes of two frames would mix.
            static int SizeOf(int w, int i) => ((w * 7919) + (i * 104_729)) % (300 * 1024) + 1;
            Task[] writers = [.. Enumerable.Range(1, Writers).Select(w => Task.Run(async () =>
            {
                for (int i = 0; i < FramesEach; i++)
                {
                    byte[] payload = Streams.Pattern(SizeOf(w, i), (w * 1000) + i);
                    await writer.WriteAsync((uint)w, FrameType.Stdout, payload);
                }
            }))];
            Task allWritten = Task.WhenAll(writers).ContinueWith(
                _ => left.Socket.Shutdown(System.Net.Sockets.SocketShutdown.Send), TaskScheduler.Default);

            var reader = new FrameReader(right);
            var next = new int[Writers + 1];
            int total = 0;
            while (await reader.ReadAsync() is Frame frame)
            {
                int w = (int)frame.Session;
                Assert.InRange(w, 1, Writers);
                int i = next[w]++;
                Assert.Equal(FrameType.Stdout, frame.Type);
                Assert.Equal(Streams.Pattern(SizeOf(w, i), (w * 1000) + i), frame.Payload.ToArray());
                total++;
            }

            await allWritten;
            await Task.WhenAll(writers);
            Assert.Equal(Writers * FramesEach, total);
            Assert.All(next.Skip(1), n => Assert.Equal(FramesEach, n));
        }
    }

    [Fact]
    public async Task Clean_end_of_stream_before_any_frame_returns_null()
    {
        var reader = new FrameReader(new MemoryStream());
        Assert.Null(await reader.ReadAsync());
        Assert.Null(await reader.ReadAsync());
    }

    [Fact]
    public async Task Clean_end_of_stream_between_frames_returns_null_after_the_frames()
    {
        var (left, right) = await Streams.SocketPairAsync();
        await using (right)
        {
            using (var writer = new FrameWriter(left))
            {
                await writer.WriteAsync(1, FrameType.Ping, "p"u8.ToArray());
                await writer.WriteAsync(1, FrameType.Pong, "p"u8.ToArray());
            }

            await left.DisposeAsync();
            var reader = new FrameReader(right);
            Assert.Equal(FrameType.Ping, (await reader.ReadAsync())?.Type);
            Assert.Equal(FrameType.Pong, (await reader.ReadAsync())?.Type);
            Assert.Null(await reader.ReadAsync());
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    [InlineData(8)]
    public async Task End_of_stream_inside_a_header_throws(int headerBytes)
    {
        byte[] bytes = Streams.Header(5 + 3, 1, 0x12)[..headerBytes];
        var reader = new FrameReader(new MemoryStream(bytes));

        var ex = await Assert.ThrowsAsync<ProtocolException>(async () => await reader.ReadAsync());
        Assert.Contains("header", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"{headerBytes} of 9", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task End_of_stream_inside_a_payload_throws()
    {
        byte[] bytes = [.. Streams.Header(5 + 10, 1, 0x12), 1, 2, 3, 4];
        var reader = new FrameReader(new MemoryStream(bytes));

        var ex = await Assert.ThrowsAsync<ProtocolException>(async () => await reader.ReadAsync());
        Assert.Contains("payload", ex.Message, StringComparison.Ordinal);
        Assert.Contains("4 of 10", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task End_of_socket_inside_a_payload_throws()
    {
        var (left, right) = await Streams.SocketPairAsync();
        await using (right)
        {
            await left.WriteAsync(Streams.Header(5 + 100, 1, 0x12));
            await left.WriteAsync(new byte[30]);
            await left.DisposeAsync();

            var ex = await Assert.ThrowsAsync<ProtocolException>(async () => await new FrameReader(right).ReadAsync());
            Assert.Contains("30 of 100", ex.Message, StringComparison.Ordinal);
        }
    }

    [Theory]
    [InlineData((uint)((1024 * 1024) + 5 + 1))]
    [InlineData(0x7FFF_FFFFu)]
    [InlineData(uint.MaxValue)]
    public async Task A_length_over_the_maximum_throws_before_reading_the_payload(uint length)
    {
        // Only the header is present: a reader that allocated and read the claimed payload would
        // report a truncated payload instead.
        using var stream = new MemoryStream([.. Streams.Header(length, 1, 0x12), 1, 2, 3]);

        var ex = await Assert.ThrowsAsync<ProtocolException>(async () => await new FrameReader(stream).ReadAsync());
        Assert.Contains($"length {length}", ex.Message, StringComparison.Ordinal);
        Assert.Contains("outside", ex.Message, StringComparison.Ordinal);
        Assert.Equal(Frame.HeaderSize, stream.Position);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(1u)]
    [InlineData(4u)]
    public async Task A_length_below_the_minimum_throws(uint length)
    {
        using var stream = new MemoryStream([.. Streams.Header(length, 1, 0x12), 1, 2, 3, 4, 5, 6]);

        var ex = await Assert.ThrowsAsync<ProtocolException>(async () => await new FrameReader(stream).ReadAsync());
        Assert.Contains($"length {length}", ex.Message, StringComparison.Ordinal);
        Assert.Equal(Frame.HeaderSize, stream.Position);
    }

    [Theory]
    [InlineData(0x00)]
    [InlineData(0x06)]
    [InlineData(0x0F)]
    [InlineData(0x1B)]
    [InlineData(0x22)]
    [InlineData(0x2F)]
    [InlineData(0x34)]
    [InlineData(0xFF)]
    public async Task An_unknown_frame_type_throws(byte type)
    {
        Assert.False(FrameTypes.IsKnown((FrameType)type));
        using var stream = new MemoryStream([.. Streams.Header(5 + 2, 9, type), 0x7B, 0x7D]);

        var ex = await Assert.ThrowsAsync<ProtocolException>(async () => await new FrameReader(stream).ReadAsync());
        Assert.Contains($"0x{type:x2}", ex.Message, StringComparison.Ordinal);
        Assert.Contains("session 9", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Reader_honours_cancellation_while_waiting()
    {
        var (left, right) = await Streams.SocketPairAsync();
        await using (left)
        await using (right)
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(100));
            await Assert.ThrowsAnyAsync<OperationCanceledException>(
                async () => await new FrameReader(right).ReadAsync(cts.Token));
        }
    }
}
