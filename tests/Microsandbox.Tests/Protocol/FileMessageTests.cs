using System.Text.Json;
using Microsandbox.Protocol;

namespace Microsandbox.Tests.Protocol;

public sealed class FileMessageTests
{
    private static string[] Names(byte[] payload)
    {
        using var doc = JsonDocument.Parse(payload);
        return [.. doc.RootElement.EnumerateObject().Select(p => p.Name)];
    }

    [Fact]
    public void A_write_request_round_trips_with_camel_case_names_and_64_bit_times()
    {
        var sent = new FileRequest
        {
            Op = FileOperation.Write, Path = "/tmp/a b", Overwrite = true, Mode = 0x1ED, Uid = 1000, Gid = 100,
            ModifiedSeconds = 4_102_444_800L, ModifiedNanoseconds = 123_456_789,
        };

        byte[] payload = ProtocolJson.Serialize(sent);
        FileRequest got = ProtocolJson.Deserialize<FileRequest>(payload);

        Assert.Equal(["op", "path", "followLinks", "recursive", "overwrite", "mode", "uid", "gid",
            "modifiedSeconds", "modifiedNanoseconds"], Names(payload));
        Assert.Equal((sent.Op, sent.Path, sent.Mode), (got.Op, got.Path, got.Mode));
        Assert.Equal((sent.Uid, sent.Gid), (got.Uid, got.Gid));
        Assert.Equal((4_102_444_800L, 123_456_789), (got.ModifiedSeconds!.Value, got.ModifiedNanoseconds));
        Assert.Null(got.Target);
    }

    [Fact]
    public void A_request_without_fields_decodes_to_empty_strings_and_nulls()
    {
        FileRequest got = ProtocolJson.Deserialize<FileRequest>("{}"u8);

        Assert.Equal(("", ""), (got.Op, got.Path));
        Assert.Null(got.Mode);
        Assert.Null(got.ModifiedSeconds);
        Assert.False(got.Recursive);
    }

    [Fact]
    public void Entries_and_results_carry_sizes_beyond_32_bits_and_link_targets()
    {
        var entry = new FileEntry
        {
            Name = "big", Type = FileEntryType.Symlink, Mode = 0x1FF, Size = 5L << 32, Target = "../x",
        };

        FileEntries entries = ProtocolJson.Deserialize<FileEntries>(
            ProtocolJson.Serialize(new FileEntries { Entries = [entry] }));
        FileResult result = ProtocolJson.Deserialize<FileResult>(
            ProtocolJson.Serialize(new FileResult { Entry = entry }));

        FileEntry got = Assert.Single(entries.Entries);
        Assert.Equal((5L << 32, "../x", "symlink"), (got.Size, got.Target, got.Type));
        Assert.Equal(5L << 32, result.Entry!.Size);
        Assert.Null(ProtocolJson.Deserialize<FileResult>("{}"u8).Entry);
        Assert.Empty(ProtocolJson.Deserialize<FileEntries>("{}"u8).Entries);
    }

    [Fact]
    public void A_file_result_ends_its_session_and_file_data_does_not()
    {
        Assert.True(FrameTypes.EndsSession(FrameType.FileResult));
        Assert.False(FrameTypes.EndsSession(FrameType.FileData));
        Assert.False(FrameTypes.EndsSession(FrameType.FileEntries));
    }
}
