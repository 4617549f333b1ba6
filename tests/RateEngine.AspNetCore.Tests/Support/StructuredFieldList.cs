using System.Globalization;

namespace RateEngine.AspNetCore.Tests.Support;

/// <summary>
/// A strict parser of RFC 8941 Structured Field Lists of Items (no inner lists): what a client of the RateLimit fields
/// runs. Throws <see cref="FormatException"/> on anything the grammar does not allow.
/// </summary>
public static class StructuredFieldList
{
    public sealed record Item(object Value, IReadOnlyDictionary<string, object> Parameters)
    {
        public long Integer(string key) => (long)Parameters[key];
    }

    public static IReadOnlyList<Item> Parse(string field)
    {
        var items = new List<Item>();
        int i = 0;
        SkipSpaces(field, ref i);
        while (i < field.Length)
        {
            object value = BareItem(field, ref i);
            var parameters = new Dictionary<string, object>(StringComparer.Ordinal);
            while (i < field.Length && field[i] == ';')
            {
                i++;
                while (i < field.Length && field[i] == ' ')
                {
                    i++;
                }

                string key = Key(field, ref i);
                object parameter = true;
                if (i < field.Length && field[i] == '=')
                {
                    i++;
                    parameter = BareItem(field, ref i);
                }

                parameters[key] = parameter;
            }

            items.Add(new Item(value, parameters));
            SkipOws(field, ref i);
            if (i == field.Length)
            {
                break;
            }

            if (field[i] != ',')
            {
                throw new FormatException($"Expected ',' at {i} in: {field}");
            }

            i++;
            SkipOws(field, ref i);
            if (i == field.Length)
            {
                throw new FormatException("A list must not end with ','.");
            }
        }

        return items.Count > 0 ? items : throw new FormatException("Empty list.");
    }

    private static object BareItem(string s, ref int i)
    {
        if (i >= s.Length)
        {
            throw new FormatException("Missing item.");
        }

        char c = s[i];
        if (c == '"')
        {
            i++;
            var text = new System.Text.StringBuilder();
            while (true)
            {
                if (i >= s.Length)
                {
                    throw new FormatException("Unterminated string.");
                }

                char d = s[i++];
                if (d == '\\')
                {
                    char escaped = i < s.Length ? s[i++] : throw new FormatException("Dangling escape.");
                    text.Append(escaped is '"' or '\\' ? escaped : throw new FormatException($"Bad escape \\{escaped}."));
                }
                else if (d == '"')
                {
                    return text.ToString();
                }
                else if (d is < ' ' or > '~')
                {
                    throw new FormatException($"Character {(int)d} is not allowed in a string.");
                }
                else
                {
                    text.Append(d);
                }
            }
        }

        if (c == '-' || char.IsAsciiDigit(c))
        {
            int start = i;
            i++;
            while (i < s.Length && char.IsAsciiDigit(s[i]))
            {
                i++;
            }

            string digits = s[start..i];
            if (digits.TrimStart('-').Length is 0 or > 15)
            {
                throw new FormatException($"Bad integer {digits}.");
            }

            return long.Parse(digits, CultureInfo.InvariantCulture);
        }

        if (char.IsAsciiLetter(c) || c == '*')
        {
            int start = i;
            while (i < s.Length && (char.IsAsciiLetterOrDigit(s[i]) || ":/!#$%&'*+-.^_`|~".Contains(s[i], StringComparison.Ordinal)))
            {
                i++;
            }

            return new Token(s[start..i]);
        }

        throw new FormatException($"Unexpected '{c}' at {i}.");
    }

    private static string Key(string s, ref int i)
    {
        int start = i;
        if (i >= s.Length || !(char.IsAsciiLetterLower(s[i]) || s[i] == '*'))
        {
            throw new FormatException($"Bad key at {i}.");
        }

        while (i < s.Length && (char.IsAsciiLetterLower(s[i]) || char.IsAsciiDigit(s[i]) || "_-.*".Contains(s[i], StringComparison.Ordinal)))
        {
            i++;
        }

        return s[start..i];
    }

    private static void SkipSpaces(string s, ref int i)
    {
        while (i < s.Length && s[i] == ' ')
        {
            i++;
        }
    }

    private static void SkipOws(string s, ref int i)
    {
        while (i < s.Length && s[i] is ' ' or '\t')
        {
            i++;
        }
    }

    public sealed record Token(string Text);
}
