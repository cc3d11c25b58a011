using System.Text;

namespace Microsandbox.PowerShell;

/// <summary>Turns a stream of UTF-8 chunks into whole lines; a character split across chunks survives.</summary>
internal sealed class LineSplitter
{
    private readonly Decoder _decoder = new UTF8Encoding(false).GetDecoder();
    private readonly StringBuilder _pending = new();

    // Null unless the whole text is wanted: streamed output of any size must not accumulate.
    private readonly StringBuilder? _all;

    /// <summary>Creates a splitter; with <paramref name="keepText"/> it also keeps everything decoded.</summary>
    public LineSplitter(bool keepText = false) => _all = keepText ? new StringBuilder() : null;

    /// <summary>Everything decoded so far, when the splitter keeps it; otherwise empty.</summary>
    public string Text => _all?.ToString() ?? "";

    /// <summary>Adds a chunk and returns the lines it completed, without their line endings.</summary>
    public IReadOnlyList<string> Add(ReadOnlySpan<byte> chunk)
    {
        var chars = new char[_decoder.GetCharCount(chunk, flush: false)];
        int n = _decoder.GetChars(chunk, chars, flush: false);
        _all?.Append(chars, 0, n);
        var lines = new List<string>();
        foreach (char c in chars.AsSpan(0, n))
        {
            if (c == '\n')
            {
                lines.Add(TakePending());
            }
            else
            {
                _pending.Append(c);
            }
        }

        return lines;
    }

    /// <summary>The last line, if the output did not end with a line break.</summary>
    public string? Flush() => _pending.Length > 0 ? TakePending() : null;

    private string TakePending()
    {
        if (_pending.Length > 0 && _pending[^1] == '\r')
        {
            _pending.Length--;
        }

        string line = _pending.ToString();
        _pending.Clear();
        return line;
    }
}
