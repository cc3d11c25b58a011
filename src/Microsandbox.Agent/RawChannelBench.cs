using System.Globalization;

namespace Microsandbox.Agent;

/// <summary>
/// The baseline of bench/streams.ps1: moves bytes over the agent port with nothing of the
/// protocol, so the bench can set the throughput of our framed, flow-controlled sessions beside
/// what the channel itself carries. Runs only when the kernel line asks for it.
/// </summary>
internal static class RawChannelBench
{
    /// <summary>
    /// <c>out:N</c> writes N zero bytes to the port; <c>in:N</c> reads N bytes from it and then
    /// writes one byte, so the host can time the whole transfer.
    /// </summary>
    public static void Run(string port, string spec)
    {
        string[] parts = spec.Split(':');
        long total = long.Parse(parts[1], CultureInfo.InvariantCulture);
        using var stream = new FileStream(port, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, 0);
        var buffer = new byte[64 * 1024];
        long done = 0;
        if (parts[0] == "out")
        {
            while (done < total)
            {
                int n = (int)Math.Min(buffer.Length, total - done);
                stream.Write(buffer, 0, n);
                done += n;
            }
        }
        else
        {
            while (done < total)
            {
                int n = stream.Read(buffer, 0, (int)Math.Min(buffer.Length, total - done));
                if (n == 0)
                {
                    break;
                }

                done += n;
            }

            stream.Write([1]);
        }

        GuestInit.Log($"raw bench {spec}: {done} bytes");
    }
}
