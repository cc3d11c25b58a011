using System.Runtime.CompilerServices;
using System.Text;
using Microsandbox.Protocol;

namespace Microsandbox.Engine;

/// <summary>A sandbox's logs: read whole, by their last lines, or followed while the sandbox runs.</summary>
public sealed partial class SandboxEngine
{
    private static readonly TimeSpan LogPollInterval = TimeSpan.FromMilliseconds(200);

    /// <summary>The file behind one of a sandbox's logs (it may not exist yet).</summary>
    public string LogPath(string name, SandboxLogKind kind) => LogPath(FindRecord(name), kind);

    /// <summary>
    /// The lines of one of a sandbox's logs. <paramref name="tail"/> keeps only the last lines
    /// (memory holds no more than those). With <paramref name="follow"/>, lines are yielded as
    /// they are written until the sandbox is no longer running (a new boot's console log is
    /// followed from its start) or the token is cancelled.
    /// </summary>
    public async IAsyncEnumerable<string> ReadLogAsync(
        string name,
        SandboxLogKind kind,
        int? tail,
        bool follow,
        [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        if (tail is < 0)
        {
            throw new SandboxException("InvalidLogTail", SandboxErrorKind.InvalidArgument,
                $"-Tail takes a count of lines, 0 or more; {tail} was asked for.", tail);
        }

        SandboxRecord record = FindRecord(name);
        string path = LogPath(record, kind);
        Func<DateTimeOffset?>? boot = kind == SandboxLogKind.Console
            ? () => RuntimeStatus.Load(StatusFile(record))?.StartedAt
            : null;
        using var reader = new LogLineReader(path, boot);
        List<string> written = await reader.ReadAvailableAsync(tail, cancellationToken).ConfigureAwait(false);
        if (!follow && reader.TakeRemainder() is { Length: > 0 } partial)
        {
            // Nothing more is awaited: an unfinished last line is a line.
            written.Add(partial);
            if (written.Count > tail)
            {
                written.RemoveAt(0);
            }
        }

        foreach (string line in written)
        {
            yield return line;
        }

        while (follow)
        {
            // Read once more after the sandbox has stopped, so its last words are not lost.
            bool live = IsLive(Reconcile(record).State);
            foreach (string line in await reader.ReadAvailableAsync(null, cancellationToken).ConfigureAwait(false))
            {
                yield return line;
            }

            if (!live)
            {
                if (reader.TakeRemainder() is { Length: > 0 } rest)
                {
                    yield return rest;
                }

                yield break;
            }

            await Task.Delay(LogPollInterval, cancellationToken).ConfigureAwait(false);
        }
    }

    private static string LogPath(SandboxRecord record, SandboxLogKind kind) => kind switch
    {
        SandboxLogKind.Runtime => Path.Join(record.Directory, "runtime.log"),
        SandboxLogKind.Command => CommandLog(record),
        _ => Path.Join(record.Directory, "console.log"),
    };

    /// <summary>
    /// Reads the complete lines a log file holds so far, keeping a partial last line for later. A
    /// console log is written anew by every boot: when the runtime's start time changes, or the
    /// file is shorter than what was read, the file is opened again from its start.
    /// </summary>
    private sealed class LogLineReader(string path, Func<DateTimeOffset?>? boot) : IDisposable
    {
        private readonly StringBuilder _pending = new();
        private readonly char[] _buffer = new char[64 * 1024];
        private StreamReader? _reader;
        private DateTimeOffset? _boot = boot?.Invoke();

        /// <summary>Returns a last line that has no newline yet, and forgets it.</summary>
        public string TakeRemainder()
        {
            string rest = _pending.ToString().TrimEnd('\r');
            _pending.Clear();
            return rest;
        }

        /// <summary>
        /// The lines completed since the last call; with <paramref name="keepLast"/>, only that many
        /// of the last, so a long log is never held whole.
        /// </summary>
        public async Task<List<string>> ReadAvailableAsync(int? keepLast, CancellationToken cancellationToken)
        {
            var lines = new Queue<string>();
            DateTimeOffset? current = boot?.Invoke();
            bool rebooted = current is not null && current != _boot;
            bool shrunk = _reader is not null && File.Exists(path)
                && new FileInfo(path).Length < _reader.BaseStream.Position;
            if (rebooted || shrunk)
            {
                _boot = current;
                _reader?.Dispose();
                _reader = null;
                _pending.Clear();
            }

            if (_reader is null)
            {
                try
                {
                    _reader = new StreamReader(new FileStream(path, FileMode.Open, FileAccess.Read,
                        FileShare.ReadWrite | FileShare.Delete), Encoding.UTF8);
                }
                catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException)
                {
                    return [];
                }
            }

            int read;
            while ((read = await _reader.ReadAsync(_buffer, cancellationToken).ConfigureAwait(false)) > 0)
            {
                int start = 0;
                for (int i = 0; i < read; i++)
                {
                    if (_buffer[i] != '\n')
                    {
                        continue;
                    }

                    _pending.Append(_buffer, start, i - start);
                    lines.Enqueue(_pending.ToString().TrimEnd('\r'));
                    _pending.Clear();
                    if (lines.Count > keepLast)
                    {
                        lines.Dequeue();
                    }

                    start = i + 1;
                }

                _pending.Append(_buffer, start, read - start);
            }

            return [.. lines];
        }

        public void Dispose() => _reader?.Dispose();
    }
}
