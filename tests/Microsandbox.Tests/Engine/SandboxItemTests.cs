using Microsandbox.Engine;
using Microsandbox.Protocol;

namespace Microsandbox.Tests.Engine;

public sealed class SandboxItemTests
{
    [Theory]
    [InlineData("file", 0x1ED, "-rwxr-xr-x")]
    [InlineData("directory", 0x3FF, "drwxrwxrwt")]
    [InlineData("symlink", 0x1FF, "lrwxrwxrwx")]
    [InlineData("file", 0x9A4, "-rwSr--r--")]
    [InlineData("file", 0xDED, "-rwsr-sr-x")]
    [InlineData("other", 0x1B6, "?rw-rw-rw-")]
    public void Mode_reads_as_ls_shows_it(string type, int mode, string expected)
    {
        var item = new SandboxItem("s", "/a/b", new FileEntry { Type = type, Mode = mode });

        Assert.Equal(expected, item.Mode);
        Assert.Equal((UnixFileMode)mode, item.UnixMode);
    }

    [Fact]
    public void Name_time_and_owner_come_from_the_entry()
    {
        var item = new SandboxItem("s", "/etc/passwd", new FileEntry
        {
            Type = "file", Size = 12, ModifiedSeconds = 1_700_000_000, ModifiedNanoseconds = 500, Uid = 7, Gid = 8,
        });

        Assert.Equal(("passwd", "/etc/passwd"), (item.Name, item.FullName));
        Assert.Equal((SandboxItemType.File, 12L), (item.Type, item.Length));
        Assert.Equal(DateTime.UnixEpoch.AddSeconds(1_700_000_000).AddTicks(5), item.LastWriteTimeUtc);
        Assert.Equal((7, 8), (item.UserId, item.GroupId));
        Assert.Equal("/", new SandboxItem("s", "/", new FileEntry { Type = "directory" }).Name);
    }
}
